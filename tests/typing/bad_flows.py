"""mypy must reject exactly the marked lines: misuse of flows.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from taskflow import QueueTasks

app = QueueTasks(name="typing")


@app.task
async def load(day: str) -> list[int]:
    return [1, 2]


async def nightly() -> None:
    flow = app.flow("nightly")
    rows = flow.add(load.prepare(20261204))  # E: arg-type
    flow.add(load, "d", after=rows)  # E: arg-type
    flow.add(load, "d", inputs={"day": "rows"})  # E: dict-item
    status = await (await flow.submit()).status()
    status.summary = "all good"  # E: misc
