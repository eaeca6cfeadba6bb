"""mypy must accept this: a flow declared with tasks, prepared calls and names, its handle's
calls, and a task that fans out returning its join's result.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from typing import assert_type, cast

from taskflow import (
    FailurePolicy,
    FlowHandle,
    FlowNode,
    FlowStatus,
    NodeFailed,
    QueueTasks,
    SyncFlowHandle,
    TaskContext,
)

app = QueueTasks(name="typing")


@app.task
async def load(day: str) -> list[int]:
    return [1, 2]


@app.task
async def total(rows: list[int], scale: int = 1) -> int:
    return sum(rows) * scale


@app.task
async def merge(parts: list[int | NodeFailed]) -> int:
    return sum(p for p in parts if not isinstance(p, NodeFailed))


@app.task
async def split(ctx: TaskContext, day: str) -> int:
    # ctx.fan_out returns Any (the join's id): under warn_return_any, say what the join gives.
    return cast(int, await ctx.fan_out(total, [[1], [2]], join=merge, partial=True))


async def nightly() -> int:
    flow = app.flow("nightly", after_failure=FailurePolicy.SKIP)
    rows = flow.add(load, "2026-12-04")
    assert_type(rows, FlowNode)
    scaled = flow.add(total.options(queue="cpu").prepare([1], scale=2), after=[rows])
    flow.add("total", after=[rows, scaled], inputs={"rows": rows}, after_failure="run")
    flow.add(split, "2026-12-04", name="fan")
    handle = await flow.submit()
    assert_type(handle, FlowHandle)
    status = await handle.wait(timeout=60)
    assert_type(status, FlowStatus)
    print(status.summary, status.counts.done, [n.reason for n in status.failures])
    async for update in handle.watch():
        print(update.state.value)
    return await handle.cancel()


def nightly_sync() -> dict[str, object]:
    flow = app.flow("sync")
    flow.add(load, "2026-12-04")
    handle = flow.submit_sync()
    assert_type(handle, SyncFlowHandle)
    return handle.result(timeout=10)
