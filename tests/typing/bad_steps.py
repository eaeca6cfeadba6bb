"""mypy must reject exactly the marked lines: misuse of ``ctx.step``.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from taskflow import QueueTasks, TaskContext

app = QueueTasks(name="typing")


def download(day: str) -> list[str]:
    return [day]


@app.task
async def report(ctx: TaskContext) -> None:
    await ctx.step("download", download, 3)  # E: call-overload
    await ctx.step("download", download)  # E: call-overload
    await ctx.step(name="download")  # E: call-overload
    rows: int = await ctx.step("download", download, "x")  # E: call-overload
    print(rows)
