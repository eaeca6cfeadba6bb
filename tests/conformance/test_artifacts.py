"""Conformance: artifacts through the app, on every backend with its default store.

A task puts artifacts through ``ctx.artifacts`` on a real `Worker`; the producer lists them,
fetches them as a stream and into a file; delete-after-fetch deletes once; a worker's
housekeeping expires what was kept long enough, and the record then says expired, when and
why; a fetch of it raises `ArtifactNotFound` saying so. The records live in the backend's
`Coordination` key-value space and the bytes in the store the backend offers
(`Broker.default_artifact_store`; a directory for the memory backend), so this is the same
check on memory, Redis, Redis Cluster and PostgreSQL. The stores' own rules are in
``test_artifact_store.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskflow import (
    ArtifactNotFound,
    ArtifactState,
    AsyncResult,
    GlobalConfig,
    QueueTasks,
    TaskContext,
)
from taskflow._artifact_sweep import ArtifactSweep, SweepReport
from taskflow._artifacts import DEFAULT_RETENTION
from taskflow.abc import Broker
from taskflow.testing import FakeClock

HOUR = 3600.0
INTERVAL_S = 60.0
BIG = bytes(range(256)) * 8_200  # a little over 2 MiB: three pieces


def artifact_app(backend: Broker, clock: FakeClock, tmp_path: Path) -> QueueTasks:
    """An app on the open `backend`, with the store the backend offers (else a directory)."""
    offered = backend.default_artifact_store()
    return QueueTasks(
        "conformance",
        broker=backend,
        clock=clock,
        config=GlobalConfig(idle_poll_s=1000, cleanup_interval_s=INTERVAL_S),
        artifacts=offered if offered is not None else tmp_path / "store",
    )


async def fetch(handle: AsyncResult[Any], name: str) -> bytes:
    return b"".join([piece async for piece in handle.fetch_artifact(name)])


async def test_put_list_fetch_and_expiry_through_the_app(
    backend: Broker, clock: FakeClock, tmp_path: Path
) -> None:
    app = artifact_app(backend, clock, tmp_path)

    async def rows() -> object:
        for n in range(3):
            yield f"{n},{n * n}\n".encode()

    @app.task(artifacts_keep=72 * HOUR)
    async def export(ctx: TaskContext) -> None:
        await ctx.artifacts.put("big.bin", BIG)
        await ctx.artifacts.put("rows.csv", rows())  # type: ignore[arg-type]
        await ctx.artifacts.put("once.txt", b"once", delete_after_fetch=True)

    with anyio.fail_after(30):
        async with app:
            async with app.running(concurrency=1):
                handle = await export.add_task()
                await handle.result()
            ready_at = clock.time()
            await _list_and_fetch(app, handle, ready_at, tmp_path)
            await _expire(app, handle, clock, ready_at)


async def _list_and_fetch(
    app: QueueTasks, handle: AsyncResult[None], ready_at: float, tmp_path: Path
) -> None:
    listed = {a.name: a for a in await handle.artifacts()}
    assert sorted(listed) == ["big.bin", "once.txt", "rows.csv"]
    big = listed["big.bin"]
    assert (big.size, big.sha256) == (len(BIG), hashlib.sha256(BIG).hexdigest())
    assert big.state is ArtifactState.READY
    assert big.expires_at == ready_at + 72 * HOUR

    assert await fetch(handle, "big.bin") == BIG
    path = await handle.fetch_artifact_to("rows.csv", tmp_path / "rows.csv")
    assert path.read_bytes() == b"0,0\n1,1\n2,4\n"

    assert await fetch(handle, "once.txt") == b"once"
    assert (await handle.artifact("once.txt")).state is ArtifactState.DELETED
    with pytest.raises(ArtifactNotFound, match="first complete fetch"):
        await fetch(handle, "once.txt")


async def _expire(
    app: QueueTasks, handle: AsyncResult[None], clock: FakeClock, ready_at: float
) -> None:
    got = await app.artifact_keeper.get(handle.task_id, "big.bin")
    assert got is not None
    blob = got[0].blob
    await clock.advance(72 * HOUR)
    report = await ArtifactSweep(app.artifact_keeper, INTERVAL_S).run_once()
    # big.bin and rows.csv expire; once.txt, deleted a result TTL (a day) ago, is forgotten.
    assert (report.expired, report.forgotten) == (2, 1)
    assert [a.name for a in await handle.artifacts()] == ["big.bin", "rows.csv"]
    got = await app.artifact_keeper.get(handle.task_id, "big.bin")
    assert got is not None and got[0].state is ArtifactState.EXPIRED  # stored, not only read so
    info = await handle.artifact("big.bin")
    assert info.state is ArtifactState.EXPIRED
    assert info.ended_at == ready_at + 72 * HOUR
    assert info.ended_why == "kept 72 h after it was ready"
    with pytest.raises(ArtifactNotFound, match=r"it expired at .*kept 72 h"):
        await fetch(handle, "big.bin")
    with pytest.raises(ArtifactNotFound):  # the bytes are gone from the store too
        async for _ in app.artifact_store.read(handle.task_id, blob):
            pass
    again = await ArtifactSweep(app.artifact_keeper, INTERVAL_S).run_once()
    assert (again.expired, again.abandoned) == (0, 0), "a second pass finds nothing to do"


async def test_passes_run_at_once_expire_each_artifact_once(
    backend: Broker, clock: FakeClock, tmp_path: Path
) -> None:
    app = artifact_app(backend, clock, tmp_path)
    keeper = app.artifact_keeper
    retention = DEFAULT_RETENTION.overridden(HOUR, False)
    names = [f"part-{n}.csv" for n in range(12)]
    reports: list[SweepReport] = []

    async def one_pass() -> None:
        reports.append(await ArtifactSweep(keeper, INTERVAL_S).run_once())

    with anyio.fail_after(30):
        async with app:
            for name in names:
                await keeper.put("t1", name, b"x" * 100, retention)
            await clock.advance(HOUR)
            async with anyio.create_task_group() as tg:
                for _ in range(3):  # three workers' housekeeping at the same moment
                    tg.start_soon(one_pass)
            assert sum(r.expired for r in reports) == len(names)
            listed = await keeper.list("t1")
            assert [a.name for a in listed] == sorted(names)
            assert {a.state for a in listed} == {ArtifactState.EXPIRED}
            assert (await ArtifactSweep(keeper, INTERVAL_S).run_once()).expired == 0
