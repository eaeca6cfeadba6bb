"""mypy must refuse these: a periodic task keeps its signature, and the schedule's arguments
are keyword-only and typed.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from taskflow import QueueTasks

app = QueueTasks(name="typing")


@app.periodic(every=1)
@app.task
async def beat(n: int) -> str:
    return str(n)


async def use() -> None:
    await beat.add_task("five")  # E: arg-type
    app.periodic("*/5 * * * *")  # E: call-arg
    app.periodic(every=1, catch_up="all")  # E: arg-type
