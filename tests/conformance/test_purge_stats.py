"""Conformance: `Broker.purge` (drop a queue's waiting tasks) and the finished-in-the-last-minute
count of `Broker.stats`."""

from __future__ import annotations

import anyio

from taskflow.abc import Broker, EventKind, TaskStatus
from taskflow.testing import FakeClock

from ._helpers import claim, done, enqueue_one, failed, message, retry

# -- purge ----------------------------------------------------------------------------------


async def test_purge_ends_waiting_tasks_and_leaves_running_ones(
    backend: Broker, clock: FakeClock
) -> None:
    t0 = clock.time()
    running = await enqueue_one(backend, clock)
    retrying = await enqueue_one(backend, clock)
    dead = await enqueue_one(backend, clock)
    lapsed = await enqueue_one(backend, clock, retries=1)
    c, d, e = await claim(backend, clock, limit=3)
    [g] = await claim(backend, clock, limit=1, lease_s=5)
    assert (c.task_id, d.task_id, e.task_id, g.task_id) == (running, retrying, dead, lapsed)
    await backend.complete([retry(d, t0 + 50), failed(e, clock)], now=t0)
    queued = await enqueue_one(backend, clock)
    scheduled = await enqueue_one(backend, clock, eta=t0 + 100)
    other = await enqueue_one(backend, clock, "other")
    # A lease that lapses: the next claim (of a higher-priority task) makes it wait in the
    # ready set for re-delivery, still running under its old token.
    await clock.advance(10)
    urgent = await enqueue_one(backend, clock, priority=5)
    [h] = await claim(backend, clock, limit=1, worker_id="w2")
    assert h.task_id == urgent

    assert await backend.purge("default", now=clock.time()) == 3

    storage = backend.storage
    for task_id in (queued, scheduled, retrying):
        record = await storage.get(task_id, now=clock.time())
        assert record is not None and record.status is TaskStatus.CANCELLED, task_id
        assert record.error is not None and record.error.type == "Purged"
        assert record.result_expires_at == clock.time() + backend.result_ttl_s
    for task_id, status in (
        (running, TaskStatus.RUNNING),
        (lapsed, TaskStatus.RUNNING),
        (urgent, TaskStatus.RUNNING),
        (dead, TaskStatus.FAILED),
        (other, TaskStatus.QUEUED),
    ):
        record = await storage.get(task_id, now=clock.time())
        assert record is not None and record.status is status, task_id
    assert [r.id for r in await backend.dead_letters("default")] == [dead]
    purged_events = [
        (event.task_id, event.detail)
        for event in await storage.read_events("default")
        if event.kind is EventKind.CANCELLED
    ]
    assert sorted(purged_events) == sorted(
        [(queued, "Purged"), (scheduled, "Purged"), (retrying, "Purged")]
    )
    [stats] = await backend.stats(["default"], now=clock.time())
    assert (stats.queued, stats.scheduled, stats.running, stats.dead) == (0, 0, 3, 1)

    # Running tasks go on: their outcomes are stored, the lapsed one is re-delivered.
    assert await backend.complete([done(c, clock)], now=clock.time()) == [True]
    assert [x.task_id for x in await claim(backend, clock, worker_id="w3")] == [lapsed]
    await clock.advance(200)  # past the eta and the retry's due time: nothing comes back
    assert await claim(backend, clock, worker_id="w3") == []
    assert await backend.purge("default", now=clock.time()) == 0
    assert await backend.purge("never-used", now=clock.time()) == 0


async def test_purge_wakes_the_result_waiters(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def purge_soon() -> None:
                await anyio.wait_all_tasks_blocked()
                assert await backend.purge("default", now=clock.time()) == 1

            tg.start_soon(purge_soon)
            record = await backend.storage.wait(task_id, timeout=None, now=clock.time())
    assert record.status is TaskStatus.CANCELLED
    assert record.error is not None and record.error.type == "Purged"


async def test_purge_of_many_tasks(backend: Broker, clock: FakeClock) -> None:
    """More than one chunk of a backend that purges in chunks (Redis: 500 per script call)."""
    messages = 1203
    for start in range(0, messages, 400):
        batch = [message(backend, priority=i % 3) for i in range(start, min(start + 400, messages))]
        await backend.enqueue(batch, now=clock.time())
    assert await backend.purge("default", now=clock.time()) == messages
    [stats] = await backend.stats(["default"], now=clock.time())
    assert (stats.queued, stats.scheduled) == (0, 0)
    assert await claim(backend, clock) == []


# -- stats: finished in the last minute -------------------------------------------------------


async def test_stats_count_the_tasks_finished_in_the_last_minute(
    backend: Broker, clock: FakeClock
) -> None:
    t0 = clock.time()
    for _ in range(4):
        await enqueue_one(backend, clock)
    cancelled = await enqueue_one(backend, clock)
    a, b, c, d = await claim(backend, clock, limit=4)
    await backend.complete([done(a, clock), failed(b, clock), retry(c, t0 + 20)], now=clock.time())
    await backend.cancel([cancelled], now=clock.time())
    await enqueue_one(backend, clock, "other")

    async def finished() -> int:
        [stats] = await backend.stats(["default"], now=clock.time())
        return stats.finished_last_minute

    assert await finished() == 3  # done, failed, cancelled; a retry is not an end
    await clock.advance(30)
    [c2] = await claim(backend, clock)
    assert c2.task_id == c.task_id
    await backend.complete([done(c2, clock), done(d, clock)], now=clock.time())
    assert await finished() == 5
    await clock.advance(45)  # t0 + 75: the first three finished more than a minute ago
    assert await finished() == 2
    await clock.advance(60)
    assert await finished() == 0
    [other] = await backend.stats(["other"], now=clock.time())
    assert other.finished_last_minute == 0
