"""mypy must reject exactly the marked lines: misuse of ``ctx.artifacts`` and the handles'
artifact calls.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from taskflow import AsyncResult, QueueTasks, TaskContext

app = QueueTasks(name="typing")


@app.task(artifacts_keep="72h")  # E: call-overload, untyped-decorator
async def bad_keep() -> None:
    pass


@app.task
async def export(ctx: TaskContext) -> None:
    await ctx.artifacts.put("a.bin", b"x", keep="soon")  # E: arg-type
    await ctx.artifacts.put("a.bin", b"x", expire=5)  # E: call-arg
    await ctx.artifacts.put("a.bin", 42)  # E: arg-type


async def consume(handle: AsyncResult[None]) -> None:
    text: str = await handle.fetch_artifact_to("a.bin", "out")  # E: assignment
    print(text)
