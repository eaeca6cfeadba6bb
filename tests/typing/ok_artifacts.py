"""mypy --strict must accept artifacts as documented: puts of each kind of data with a put's
own retention, the task's retention on the decorator, and the handles' calls and their types.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import assert_type

from taskflow import ArtifactInfo, AsyncResult, QueueTasks, SyncResult, TaskContext

app = QueueTasks(name="typing")


async def pieces() -> AsyncIterator[bytes]:
    yield b"a"


def lines() -> Iterator[bytes]:
    yield b"b"


@app.task(artifacts_keep=timedelta(hours=72), artifacts_delete_after_fetch=True)
async def export(ctx: TaskContext) -> None:
    info = await ctx.artifacts.put("a.bin", b"x")
    assert_type(info, ArtifactInfo)
    await ctx.artifacts.put("b.bin", Path("/tmp/b"), keep=3600)
    await ctx.artifacts.put("c.bin", pieces(), keep=None, delete_after_fetch=False)
    await ctx.artifacts.put("d.bin", lines(), keep=timedelta(minutes=5))


@app.task(artifacts_keep=None)
def sync_export(ctx: TaskContext) -> None:
    ctx.artifacts.put_sync("a.bin", b"x", delete_after_fetch=True)


async def consume(handle: AsyncResult[None], blocking: SyncResult[None]) -> None:
    assert_type(await handle.artifacts(), list[ArtifactInfo])
    assert_type(await handle.artifact("a.bin"), ArtifactInfo)
    async for piece in handle.fetch_artifact("a.bin"):
        assert_type(piece, bytes)
    assert_type(await handle.fetch_artifact_to("a.bin", "out.bin"), Path)
    assert_type(await handle.delete_artifact("a.bin"), bool)
    for part in blocking.fetch_artifact("a.bin"):
        assert_type(part, bytes)
    assert_type(blocking.artifacts(), list[ArtifactInfo])
