"""Conformance of `Broker.wake`: a task put off until later becomes claimable now, in the place of
the ready order it would have had, and idle workers hear of it."""

from __future__ import annotations

from typing import Any

from taskflow.abc import (
    Broker,
    ErrorInfo,
    EventKind,
    Lease,
    LeaseState,
    Outcome,
    OutcomeKind,
    TaskStatus,
)
from taskflow.testing import FakeClock

from ._helpers import LEASE_S, claim, done, enqueue_one, release, retry
from .test_work_wakeups import Woken, go_idle

LATER = 1_000.0  # a release's safety-net time, far past every claim of these tests


async def _enqueue(backend: Broker, clock: FakeClock, **options: Any) -> str:
    """Enqueue one message made now (its `created_at` is the clock's time, as a client's is)."""
    return await enqueue_one(backend, clock, created_at=clock.time(), **options)


async def _claim_ids(backend: Broker, clock: FakeClock, limit: int = 100) -> list[str]:
    return [d.task_id for d in await claim(backend, clock, limit=limit)]


async def test_wake_puts_released_tasks_back_in_their_first_place(
    backend: Broker, clock: FakeClock
) -> None:
    a = await _enqueue(backend, clock)
    await clock.advance(1)
    b = await _enqueue(backend, clock)
    await clock.advance(1)
    c = await _enqueue(backend, clock)
    deliveries = await claim(backend, clock, limit=2)
    assert [d.task_id for d in deliveries] == [a, b]
    await backend.complete(
        [release(d, retry_at=clock.time() + LATER) for d in deliveries], now=clock.time()
    )
    await clock.advance(1)
    d = await _enqueue(backend, clock)
    assert await _claim_ids(backend, clock, limit=0) == []
    # Put off: only c and d are claimable. Woken (in any order), a and b go back before c.
    await backend.wake([b, a], now=clock.time())
    assert await _claim_ids(backend, clock) == [a, b, c, d]


async def test_wake_orders_by_priority_first(backend: Broker, clock: FakeClock) -> None:
    low = await _enqueue(backend, clock)
    high = await _enqueue(backend, clock, priority=5)
    [first] = await claim(backend, clock, limit=1)
    assert first.task_id == high
    await backend.complete([release(first, retry_at=clock.time() + LATER)], now=clock.time())
    await clock.advance(1)
    later = await _enqueue(backend, clock)
    await backend.wake([high], now=clock.time())
    assert await _claim_ids(backend, clock) == [high, low, later]


async def test_woken_release_reads_queued_with_its_attempt_refunded(
    backend: Broker, clock: FakeClock
) -> None:
    task_id = await _enqueue(backend, clock)
    [delivery] = await claim(backend, clock)
    await backend.complete([release(delivery, retry_at=clock.time() + LATER)], now=clock.time())
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.status is TaskStatus.SCHEDULED
    await backend.wake([task_id], now=clock.time())
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and (record.status, record.attempts) == (TaskStatus.QUEUED, 0)
    [again] = await claim(backend, clock)
    assert (again.task_id, again.attempt) == (task_id, 1)


async def test_wake_makes_a_retrying_task_claimable_now(backend: Broker, clock: FakeClock) -> None:
    task_id = await _enqueue(backend, clock, retries=3)
    [delivery] = await claim(backend, clock)
    await backend.complete([retry(delivery, clock.time() + LATER)], now=clock.time())
    assert await claim(backend, clock) == []
    await backend.wake([task_id], now=clock.time())
    [again] = await claim(backend, clock)
    assert (again.task_id, again.attempt) == (task_id, 2)


async def test_wake_makes_a_scheduled_task_claimable_now(backend: Broker, clock: FakeClock) -> None:
    task_id = await _enqueue(backend, clock, eta=clock.time() + LATER)
    assert await claim(backend, clock) == []
    await backend.wake([task_id], now=clock.time())
    assert await _claim_ids(backend, clock) == [task_id]
    assert await claim(backend, clock) == []  # delivered once


async def test_wake_leaves_running_ended_ready_and_unknown_tasks_alone(
    backend: Broker, clock: FakeClock
) -> None:
    running = await _enqueue(backend, clock)
    finished = await _enqueue(backend, clock)
    deliveries = await claim(backend, clock, limit=2)
    by_id = {d.task_id: d for d in deliveries}
    await backend.complete([done(by_id[finished], clock)], now=clock.time())
    ready = await _enqueue(backend, clock)
    unknown = backend.new_task_id("default")
    await backend.wake([running, finished, ready, unknown, ready], now=clock.time())
    lease = Lease(running, by_id[running].token)
    states = await backend.extend([lease], lease_s=LEASE_S, now=clock.time())
    assert states == [LeaseState.OK]
    record = await backend.storage.get(finished, now=clock.time())
    assert record is not None and record.status is TaskStatus.DONE
    assert await _claim_ids(backend, clock) == [ready]  # once, and nothing else
    assert await backend.storage.get(unknown, now=clock.time()) is None


async def test_wake_spans_queues_in_one_call(backend: Broker, clock: FakeClock) -> None:
    ids = []
    for queue in ("qa", "qb"):
        ids.append(await enqueue_one(backend, clock, queue, created_at=clock.time()))
    deliveries = await claim(backend, clock, ("qa", "qb"))
    await backend.complete(
        [release(d, retry_at=clock.time() + LATER) for d in deliveries], now=clock.time()
    )
    assert await claim(backend, clock, ("qa", "qb")) == []
    await backend.wake(ids, now=clock.time())
    assert sorted(d.task_id for d in await claim(backend, clock, ("qa", "qb"))) == sorted(ids)


async def test_wake_calls_idle_workers_back(backend: Broker, clock: FakeClock) -> None:
    task_id = await _enqueue(backend, clock)
    [delivery] = await claim(backend, clock)
    await backend.complete([release(delivery, retry_at=clock.time() + LATER)], now=clock.time())
    woken = Woken()
    backend.watch_work(["default"], worker_id="w1", callback=woken)
    await go_idle(backend, clock)
    calls = woken.calls
    await backend.wake([task_id], now=clock.time())
    await woken.wait()
    assert woken.calls > calls
    assert [d.task_id for d in await claim(backend, clock, worker_id="w1")] == [task_id]
    await backend.unwatch_work(["default"], worker_id="w1", now=clock.time())


async def test_a_release_that_says_why_shows_it_in_its_event(
    backend: Broker, clock: FakeClock
) -> None:
    """A worker parks a task that waits for a lock with a RELEASE whose error says so: the
    `released` event carries its type as detail; the task's record shows no error."""
    task_id = await _enqueue(backend, clock)
    [delivery] = await claim(backend, clock)
    why = ErrorInfo("WaitingForLock", "waiting for lock 'dwh.sales' (exclusive)")
    parked = Outcome(
        delivery.task_id, delivery.token, OutcomeKind.RELEASE, error=why, retry_at=clock.time() + 5
    )
    assert await backend.complete([parked], now=clock.time()) == [True]
    events = await backend.storage.read_events("default")
    released = [e for e in events if e.task_id == task_id and e.kind is EventKind.RELEASED]
    assert [e.detail for e in released] == ["WaitingForLock"]
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.error is None and record.attempts == 0
