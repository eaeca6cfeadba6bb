"""A worker's entry in the worker registry (`_registry.py`): written when the worker is ready,
refreshed with each heartbeat (counters, the roles its process leads), removed when it stops.
Memory backend, `FakeClock` for every heartbeat. The rules of the registry itself (lapse,
deletion) are the conformance suite's (``tests/conformance/test_registry_errors.py``)."""

from __future__ import annotations

import os
import socket

import anyio
import pytest

from taskflow import GlobalConfig, QueueTasks
from taskflow.testing import FakeClock

LEASE_S = 30.0
HEARTBEAT_S = 10.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> QueueTasks:
    config = GlobalConfig(lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S, idle_poll_s=1000)
    return QueueTasks(name="t", clock=clock, config=config)


async def test_the_entry_is_there_when_ready_and_follows_the_heartbeat(
    app: QueueTasks, clock: FakeClock
) -> None:
    release = anyio.Event()

    @app.task
    async def quick() -> str:
        return "ok"

    @app.task
    async def held() -> None:
        await release.wait()

    with anyio.fail_after(10):
        async with app.running(concurrency=3, queues=["default", "b"]) as starter:
            [entry] = await app.workers()
            assert starter.worker is not None and entry.id == starter.worker.worker_id
            assert (entry.host, entry.pid) == (socket.gethostname(), os.getpid())
            assert (entry.queues, entry.concurrency, entry.roles) == (("default", "b"), 3, ())
            assert (entry.processed, entry.running) == (0, 0)
            assert entry.started_at == entry.heartbeat_at == clock.time()
            assert entry.expires_at == clock.time() + 2 * LEASE_S

            assert await (await quick.add_task()).result(timeout=5) == "ok"
            await held.add_task()
            await anyio.wait_all_tasks_blocked()
            async with app.leadership("generator"):
                await clock.advance(HEARTBEAT_S)
                await anyio.wait_all_tasks_blocked()
                [entry] = await app.workers()
            assert (entry.processed, entry.running, entry.roles) == (1, 1, ("generator",))
            assert entry.heartbeat_at == clock.time()
            release.set()
        assert await app.workers() == []  # a stopping worker removes its entry


async def test_two_workers_of_one_app_have_an_entry_each(app: QueueTasks) -> None:
    with anyio.fail_after(10):
        async with app.running(), app.running(queues=["other"]):
            entries = await app.workers()
    assert sorted(e.queues for e in entries) == [("default",), ("other",)]
