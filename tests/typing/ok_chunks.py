"""mypy must accept this: ``ctx.chunks`` hands out ranges for row ranges and lists of items for
the rest, to ``async for`` in async tasks and ``for`` in sync ones.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import assert_type

from taskflow import Chunks, QueueTasks, TaskContext

app = QueueTasks(name="typing")


async def names() -> AsyncIterator[str]:
    yield "a"


@app.task
async def export(ctx: TaskContext, first: int, last: int) -> int:
    rows = ctx.chunks((first, last + 1), size=1000, message="loaded {done} of {total}")
    assert_type(rows, Chunks[range])
    async for chunk in rows:
        assert_type(chunk, range)
    async for items in ctx.chunks(["a", "b"], size=1, name="items"):
        assert_type(items, list[str])
    async for batch in ctx.chunks(names(), size=10, resume=False, count="chunks"):
        assert_type(batch, list[str])
    return rows.done_rows + (rows.total or 0)


@app.task
def export_sync(ctx: TaskContext) -> int:
    done = 0
    for chunk in ctx.chunks(range(10), size=3):
        assert_type(chunk, range)
        done += len(chunk)
    return done
