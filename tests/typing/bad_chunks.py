"""mypy must reject exactly the marked lines: misuse of ``ctx.chunks``.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from taskflow import QueueTasks, TaskContext

app = QueueTasks(name="typing")


@app.task
async def export(ctx: TaskContext) -> None:
    ctx.chunks(range(10))  # E: call-overload
    ctx.chunks(range(10), size=3, count="pages")  # E: call-overload
    ctx.chunks(42, size=3)  # E: call-overload
    async for chunk in ctx.chunks(["a"], size=1):
        print(chunk.start)  # E: attr-defined
