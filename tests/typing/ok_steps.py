"""mypy must accept this: ``ctx.step`` returns the function's value (sync or async function),
and its block form is a `Step` entered with ``async with`` or ``with``.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from typing import Any, assert_type

from taskflow import QueueTasks, Step, TaskContext

app = QueueTasks(name="typing")


def download(day: str, *, retries: int = 3) -> list[str]:
    return [day] * retries


async def aggregate(rows: list[str]) -> int:
    return len(rows)


@app.task
async def report(ctx: TaskContext, day: str) -> int:
    rows = await ctx.step("download", download, day, retries=2)
    assert_type(rows, list[str])
    total = await ctx.step("aggregate", aggregate, rows)
    assert_type(total, int)
    async with ctx.step("publish") as step:
        assert_type(step, Step)
        assert_type(step.done, bool)
        if not step.done:
            step.value = total
    assert_type(step.value, Any)
    return total


@app.task
def sync_report(ctx: TaskContext) -> None:
    with ctx.step("download") as step:
        if not step.done:
            step.value = download("x")
