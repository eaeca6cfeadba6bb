"""Conformance: result waiters (push), the event stream and cleanup."""

from __future__ import annotations

import anyio
import pytest

from taskflow import TaskNotFound
from taskflow.abc import (
    LATEST,
    Broker,
    Event,
    EventKind,
    Outcome,
    OutcomeKind,
    Progress,
    ProgressUpdate,
    TaskOutcome,
    TaskStatus,
    encode_value,
)
from taskflow.testing import FakeClock

from ._helpers import TTL_S, claim, done, enqueue_one, failed, message, release, retry

# -- storage.wait (what AsyncResult.result reads) -------------------------------------------


async def test_wait_returns_when_another_coroutine_completes(
    backend: Broker, clock: FakeClock
) -> None:
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock)
    outcomes: list[TaskOutcome] = []

    async def waiter() -> None:
        outcomes.append(await backend.storage.wait(task_id, timeout=None, now=clock.time()))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert outcomes == []
            await backend.complete([done(delivery, clock, 7)], now=clock.time())
    [outcome] = outcomes
    assert isinstance(outcome, TaskOutcome)
    assert (outcome.id, outcome.status) == (task_id, TaskStatus.DONE)
    assert outcome.result == encode_value(7) and outcome.error is None


@pytest.mark.parametrize("kind", ["done", "failed"])
async def test_wait_gets_what_the_record_says(backend: Broker, clock: FakeClock, kind: str) -> None:
    """The outcome a waiter is woken with (pushed, or read) is the outcome part of the task's
    record, read afterwards."""
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock)
    got: list[TaskOutcome] = []

    async def waiter() -> None:
        got.append(await backend.storage.wait(task_id, timeout=None, now=clock.time()))

    ending = done(delivery, clock, 7) if kind == "done" else failed(delivery, clock)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            await backend.complete([ending], now=clock.time())
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and got == [TaskOutcome.of(record)]
    if kind == "failed":
        assert got[0].error is not None and got[0].error.type == "ValueError"


async def test_wait_wakes_on_cancel_of_a_queued_task(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def cancel_soon() -> None:
                await anyio.wait_all_tasks_blocked()
                await backend.cancel([task_id], now=clock.time())

            tg.start_soon(cancel_soon)
            outcome = await backend.storage.wait(task_id, timeout=None, now=clock.time())
    assert outcome.status is TaskStatus.CANCELLED


async def test_wait_wakes_on_lease_expired_dead_letter(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    await claim(backend, clock, lease_s=10)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def lapse() -> None:
                await anyio.wait_all_tasks_blocked()
                await clock.advance(11)
                await claim(backend, clock, worker_id="w2")

            tg.start_soon(lapse)
            outcome = await backend.storage.wait(task_id, timeout=None, now=clock.time())
    assert outcome.status is TaskStatus.FAILED
    assert outcome.error is not None and outcome.error.type == "LeaseExpired"


async def test_wait_times_out(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    with anyio.fail_after(10), pytest.raises(TimeoutError):
        await backend.storage.wait(task_id, timeout=0.05, now=clock.time())
    assert task_id not in backend.storage.waiters


async def test_wait_for_an_unknown_id(backend: Broker, clock: FakeClock) -> None:
    with anyio.fail_after(10), pytest.raises(TaskNotFound):
        await backend.storage.wait("never-enqueued", timeout=1, now=clock.time())
    assert "never-enqueued" not in backend.storage.waiters


async def test_wait_for_a_finished_task_returns_at_once(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock)
    await backend.complete([done(delivery, clock, "x")], now=clock.time())
    with anyio.fail_after(10):
        outcome = await backend.storage.wait(task_id, timeout=None, now=clock.time())
    assert outcome.status is TaskStatus.DONE and outcome.result == encode_value("x")
    assert outcome.result_expires_at == clock.time() + TTL_S and not outcome.result_expired


async def test_wait_does_not_miss_a_completion_right_after_its_read(
    backend: Broker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task completes right after the waiter's read (the waiter is registered before it
    reads, through `Storage._get_outcomes`): still woken."""
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock)
    storage = backend.storage
    original = storage._get_outcomes
    reads = 0

    async def read_then_complete(task_ids: list[str], now: float) -> list[TaskOutcome | None]:
        nonlocal reads
        got = await original(task_ids, now)
        reads += 1
        if reads == 1:
            await backend.complete([done(delivery, clock)], now=clock.time())
        return got

    monkeypatch.setattr(storage, "_get_outcomes", read_then_complete)
    with anyio.fail_after(10):
        outcome = await storage.wait(task_id, timeout=None, now=clock.time())
    assert reads >= 1 and outcome.status is TaskStatus.DONE


async def test_many_waiters_of_one_task(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock)
    statuses: list[TaskStatus] = []

    async def waiter() -> None:
        outcome = await backend.storage.wait(task_id, timeout=None, now=clock.time())
        statuses.append(outcome.status)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            await backend.complete([done(delivery, clock)], now=clock.time())
    assert statuses == [TaskStatus.DONE] * 3


# -- events ---------------------------------------------------------------------------------


def kinds(events: list[Event], task_id: str) -> list[EventKind]:
    return [e.kind for e in events if e.task_id == task_id]


async def test_every_state_change_is_an_event_in_order(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock, retries=2, order_id="order-1")
    [d1] = await claim(backend, clock)
    await backend.storage.report(
        [ProgressUpdate(task_id, d1.token, progress=Progress(1, 2), yields=[b"\x01"])],
        now=clock.time(),
    )
    await backend.complete([retry(d1, None)], now=clock.time())
    [d2] = await claim(backend, clock)
    await backend.complete([release(d2)], now=clock.time())
    [d3] = await claim(backend, clock)
    await backend.cancel([task_id], now=clock.time())
    await clock.advance(1)
    await backend.complete([done(d3, clock)], now=clock.time())

    events = await backend.storage.read_events("default")
    assert kinds(events, task_id) == [
        EventKind.QUEUED,
        EventKind.RUNNING,
        EventKind.PROGRESS,
        EventKind.YIELDED,
        EventKind.RETRYING,
        EventKind.RUNNING,
        EventKind.RELEASED,
        EventKind.RUNNING,
        EventKind.CANCEL_REQUESTED,
        EventKind.DONE,
    ]
    assert all(e.queue == "default" and e.order_id == "order-1" for e in events)
    assert [e.attempt for e in events if e.kind is EventKind.RUNNING] == [1, 2, 2]
    assert events[-1].at == clock.time() and events[0].at == clock.time() - 1
    assert len({e.cursor for e in events}) == len(events)


async def test_every_event_carries_its_tasks_name(backend: Broker, clock: FakeClock) -> None:
    """Each kind of event, whichever call writes it (enqueue, claim, report, complete, cancel,
    requeue, a lapse the claim settles), names its task."""
    names: dict[str, str] = {}

    async def send(name: str, **options: object) -> str:
        task_id = await enqueue_one(backend, clock, name=name, **options)
        names[task_id] = name
        return task_id

    runner = await send("shop.buy", retries=1)
    doomed = await send("shop.fail")
    lapsed = await send("shop.lapse")
    expired = await send("shop.expire")
    later = await send("shop.later", eta=clock.time() + 60)
    await send("shop.child", waits_for=[later], flow_id="flow-1")
    cancelled = await send("shop.cancel")
    await backend.cancel([cancelled], now=clock.time())
    d_runner, d_doomed, d_lapsed, d_expired = await claim(backend, clock, limit=4, lease_s=10)
    assert [d.task_id for d in (d_runner, d_doomed, d_lapsed, d_expired)] == [
        runner,
        doomed,
        lapsed,
        expired,
    ]
    update = ProgressUpdate(runner, d_runner.token, progress=Progress(1, 2), yields=[b"\x01"])
    await backend.storage.report([update], now=clock.time())
    await backend.complete(
        [
            retry(d_runner, None),
            failed(d_doomed, clock),
            Outcome(expired, d_expired.token, OutcomeKind.EXPIRED),
        ],
        now=clock.time(),
    )
    [d_runner] = await claim(backend, clock)
    await backend.complete([release(d_runner)], now=clock.time())
    [d_runner] = await claim(backend, clock)
    await backend.cancel([runner], now=clock.time())
    await backend.complete([done(d_runner, clock)], now=clock.time())
    [requeued] = await backend.requeue_dead([doomed], now=clock.time(), new_ids=["requeued-n"])
    assert requeued is not None
    names[requeued] = "shop.fail"
    await clock.advance(11)
    # Starts the requeued task, and dead-letters the lapsed one (no attempt left).
    assert [d.task_id for d in await claim(backend, clock)] == [requeued]
    await send("shop.copy", outcome_to=requeued, copy=True)  # a HEDGED event on `requeued`

    events = await backend.storage.read_events("default")
    assert {e.kind for e in events} == set(EventKind)
    assert kinds(events, lapsed)[-1] is EventKind.FAILED
    assert [(e.task_id, e.kind, e.name) for e in events] == [
        (e.task_id, e.kind, names[e.task_id]) for e in events
    ]


async def test_failed_requeued_and_scheduled_events(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock)
    await backend.complete([failed(delivery, clock, "KeyError")], now=clock.time())
    [new_id] = await backend.requeue_dead([task_id], now=clock.time(), new_ids=["requeued-1"])
    events = await backend.storage.read_events("default")
    assert kinds(events, task_id) == [
        EventKind.QUEUED,
        EventKind.RUNNING,
        EventKind.FAILED,
        EventKind.REQUEUED,
    ]
    assert kinds(events, new_id or "") == [EventKind.QUEUED]
    assert [e.detail for e in events if e.kind is EventKind.FAILED] == ["KeyError"]


async def test_cursors_resume_and_queues_are_separate(backend: Broker, clock: FakeClock) -> None:
    ids = [await enqueue_one(backend, clock) for _ in range(5)]
    other = await enqueue_one(backend, clock, "other")
    storage = backend.storage
    first = await storage.read_events("default", limit=2)
    assert [e.task_id for e in first] == ids[:2]
    rest = await storage.read_events("default", after=first[-1].cursor)
    assert [e.task_id for e in rest] == ids[2:]
    assert await storage.read_events("default", after=rest[-1].cursor) == []
    assert [e.task_id for e in await storage.read_events("other")] == [other]
    assert await storage.read_events("no-such-queue") == []


async def test_cursors_resume_inside_one_batch(backend: Broker, clock: FakeClock) -> None:
    """A batch's events (one stream entry on Redis) read a few at a time, and followed."""
    before = await enqueue_one(backend, clock)
    batch = [message(backend) for _ in range(7)]
    ids = [r.task_id for r in await backend.enqueue(batch, now=clock.time())]
    after = await enqueue_one(backend, clock)
    storage = backend.storage
    seen: list[str] = []
    cursor = None
    while page := await storage.read_events("default", after=cursor, limit=3):
        assert len(page) <= 3
        seen += [e.task_id for e in page]
        cursor = page[-1].cursor
    assert seen == [before, *ids, after]
    followed: list[str] = []
    with anyio.fail_after(10):
        async for event in storage.follow_events("default", batch=2):
            followed.append(event.task_id)
            if len(followed) == len(seen):
                break
    assert followed == seen


async def test_follow_events_wakes_on_push(backend: Broker, clock: FakeClock) -> None:
    first = await enqueue_one(backend, clock)
    seen: list[str] = []
    arrived = [anyio.Event() for _ in range(3)]

    async def follow() -> None:
        async for event in backend.storage.follow_events("default"):
            seen.append(event.task_id)
            arrived[len(seen) - 1].set()
            if len(seen) == 3:
                return

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await arrived[0].wait()
            await anyio.wait_all_tasks_blocked()  # the follower now waits for a push
            second = await enqueue_one(backend, clock)
            await arrived[1].wait()
            third = await enqueue_one(backend, clock)
    assert seen == [first, second, third]


async def test_follow_events_resumes_after_a_cursor(backend: Broker, clock: FakeClock) -> None:
    await enqueue_one(backend, clock)
    [event] = await backend.storage.read_events("default")
    second = await enqueue_one(backend, clock)
    with anyio.fail_after(10):
        stream = backend.storage.follow_events("default", after=event.cursor)
        resumed = await stream.__anext__()
        await stream.aclose()  # type: ignore[attr-defined]
    assert resumed.task_id == second


@pytest.mark.parametrize("history", ["some events", "none yet"])
async def test_follow_events_from_latest_yields_only_what_happens_next(
    backend: Broker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, history: str
) -> None:
    """`LATEST` skips the stream's past; what comes after the follower started is all there,
    and its cursors resume without losing an event."""
    if history == "some events":
        for _ in range(3):
            await enqueue_one(backend, clock)
    storage = backend.storage
    waiting = anyio.Event()
    wait_events = storage._wait_events

    async def signalled_wait(queue: str, after: str | None) -> None:
        waiting.set()  # the follower has started: it waits for events after `after`
        await wait_events(queue, after)

    monkeypatch.setattr(storage, "_wait_events", signalled_wait)
    seen: list[Event] = []

    async def follow() -> None:
        async for event in storage.follow_events("default", after=LATEST):
            seen.append(event)
            if len(seen) == 2:
                return

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await waiting.wait()
            first = await enqueue_one(backend, clock)
            second = await enqueue_one(backend, clock)
    assert [(e.task_id, e.kind) for e in seen] == [
        (first, EventKind.QUEUED),
        (second, EventKind.QUEUED),
    ]
    # Resumed from the first one's cursor: the second, then what came since; nothing lost.
    third = await enqueue_one(backend, clock)
    with anyio.fail_after(10):
        stream = storage.follow_events("default", after=seen[0].cursor)
        resumed = [await stream.__anext__(), await stream.__anext__()]
        await stream.aclose()  # type: ignore[attr-defined]
    assert resumed[0] == seen[1] and resumed[1].task_id == third


@pytest.mark.parametrize("cursor", ["bogus", "12-x", "$$"])
async def test_a_cursor_that_is_not_this_backends_is_refused_with_the_fix(
    backend: Broker, clock: FakeClock, cursor: str
) -> None:
    await enqueue_one(backend, clock)
    storage = backend.storage
    fix = r"event cursor .*taskflow.abc.LATEST"
    with pytest.raises(ValueError, match=fix):
        await storage.read_events("default", after=cursor)
    stream = storage.follow_events("default", after=cursor)
    with anyio.fail_after(10), pytest.raises(ValueError, match=fix):
        await stream.__anext__()


async def test_read_events_after_latest_is_empty(backend: Broker, clock: FakeClock) -> None:
    storage = backend.storage
    assert await storage.read_events("default", after=LATEST) == []
    await enqueue_one(backend, clock)
    assert await storage.read_events("default", after=LATEST) == []
    assert len(await storage.read_events("default")) == 1


@pytest.mark.parametrize("sent", ["one by one", "in one batch"])
async def test_event_stream_is_capped(backend: Broker, clock: FakeClock, sent: str) -> None:
    backend.storage.events_maxlen = 5
    if sent == "one by one":
        ids = [await enqueue_one(backend, clock) for _ in range(300)]
    else:
        batch = [message(backend) for _ in range(300)]
        ids = [r.task_id for r in await backend.enqueue(batch, now=clock.time())]
    events = await backend.storage.read_events("default", limit=1000)
    # "Approximately" events_maxlen (Redis trims whole stream nodes): not all, the newest kept.
    assert 5 <= len(events) < 300
    assert events[-1].task_id == ids[-1]
    assert [e.task_id for e in events] == ids[-len(events) :]


async def test_a_cursor_older_than_the_cap_resumes_at_the_oldest_kept(
    backend: Broker, clock: FakeClock
) -> None:
    backend.storage.events_maxlen = 5
    await enqueue_one(backend, clock)
    [oldest] = await backend.storage.read_events("default")
    ids = [await enqueue_one(backend, clock) for _ in range(300)]
    kept = await backend.storage.read_events("default")
    resumed = await backend.storage.read_events("default", after=oldest.cursor)
    # The same events; their cursors may differ by the path read (they are opaque: on
    # PostgreSQL one read while an older transaction is in progress lists what it passed).
    assert [(e.task_id, e.kind) for e in resumed] == [(e.task_id, e.kind) for e in kept]
    assert resumed[-1].task_id == ids[-1]


# -- cleanup --------------------------------------------------------------------------------


async def test_cleanup_drops_old_records_and_dedup_keys(backend: Broker, clock: FakeClock) -> None:
    old = await enqueue_one(backend, clock, dedup_key="k", dedup_ttl_s=TTL_S * 3)
    live = await enqueue_one(backend, clock)
    [delivery, _] = await claim(backend, clock)
    await backend.complete([done(delivery, clock)], now=clock.time())  # result TTL: TTL_S
    storage = backend.storage
    assert await storage.cleanup(now=clock.time(), keep_s=60) == 0
    await clock.advance(TTL_S + 59)
    assert await storage.cleanup(now=clock.time(), keep_s=60) == 0
    await clock.advance(1)
    assert await storage.cleanup(now=clock.time(), keep_s=60) == 1
    assert await storage.get(old, now=clock.time()) is None
    assert await storage.get(live, now=clock.time()) is not None
    # The record is gone and with it the dedup key, although its dedup TTL had not passed.
    fresh = message(backend, dedup_key="k")
    [result] = await backend.enqueue([fresh], now=clock.time())
    assert result.created and result.task_id == fresh.id


async def test_cleanup_drops_dead_letters_with_their_records(
    backend: Broker, clock: FakeClock
) -> None:
    await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock)
    await backend.complete([failed(delivery, clock)], now=clock.time())
    await clock.advance(TTL_S)
    assert await backend.storage.cleanup(now=clock.time(), keep_s=0) == 1
    assert await backend.dead_letters("default") == []
    [stats] = await backend.stats(["default"], now=clock.time())
    assert stats.dead == 0


async def test_wait_is_cancellable(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                await backend.storage.wait(task_id, timeout=None, now=clock.time())

            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert task_id not in backend.storage.waiters


async def test_endings_decided_by_the_backend_are_events(backend: Broker, clock: FakeClock) -> None:
    cancelled = await enqueue_one(backend, clock)
    lapsed = await enqueue_one(backend, clock)
    expired = await enqueue_one(backend, clock)
    await backend.cancel([cancelled], now=clock.time())
    d_lapsed, d_expired = await claim(backend, clock, lease_s=10)
    assert (d_lapsed.task_id, d_expired.task_id) == (lapsed, expired)
    expired_outcome = Outcome(expired, d_expired.token, OutcomeKind.EXPIRED)
    await backend.complete([expired_outcome], now=clock.time())
    await clock.advance(11)
    await claim(backend, clock)
    events = await backend.storage.read_events("default")
    assert kinds(events, cancelled) == [EventKind.QUEUED, EventKind.CANCELLED]
    assert kinds(events, expired) == [EventKind.QUEUED, EventKind.RUNNING, EventKind.EXPIRED]
    assert kinds(events, lapsed) == [EventKind.QUEUED, EventKind.RUNNING, EventKind.FAILED]
    [dead_event] = [e for e in events if e.task_id == lapsed and e.kind is EventKind.FAILED]
    assert dead_event.detail == "LeaseExpired" and dead_event.at == clock.time()


async def test_report_is_accepted_while_a_cancel_is_pending(
    backend: Broker, clock: FakeClock
) -> None:
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock)
    await backend.cancel([task_id], now=clock.time())
    update = ProgressUpdate(task_id, delivery.token, progress=Progress(1, 1))
    assert await backend.storage.report([update], now=clock.time()) == [True]


async def test_a_new_attempt_starts_without_the_last_attempts_progress_and_yields(
    backend: Broker, clock: FakeClock
) -> None:
    task_id = await enqueue_one(backend, clock)
    [first] = await claim(backend, clock)
    update = ProgressUpdate(
        task_id, first.token, progress=Progress(1, 2), yields=[encode_value("a")]
    )
    assert await backend.storage.report([update], now=clock.time()) == [True]
    await backend.complete([retry(first, clock.time())], now=clock.time())
    [second] = await claim(backend, clock)
    assert second.attempt == 2
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None
    assert record.progress is None
    assert record.yields == []
    update = ProgressUpdate(task_id, second.token, yields=[encode_value("b")])
    assert await backend.storage.report([update], now=clock.time()) == [True]
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.yields == [encode_value("b")]


@pytest.mark.parametrize("due", ["now", "later"])
async def test_a_released_task_keeps_no_progress_or_yields_of_the_interrupted_attempt(
    backend: Broker, clock: FakeClock, due: str
) -> None:
    """A release (a graceful stop, an unknown name put back) refunds the attempt, so the task
    reads as one that has not run: no stale "3/6" while it waits for its next attempt."""
    task_id = await enqueue_one(backend, clock)
    [first] = await claim(backend, clock)
    update = ProgressUpdate(
        task_id, first.token, progress=Progress(3, 6), yields=[encode_value("a")]
    )
    assert await backend.storage.report([update], now=clock.time()) == [True]
    retry_at = None if due == "now" else clock.time() + 5
    assert await backend.complete([release(first, retry_at)], now=clock.time()) == [True]
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None
    expected = TaskStatus.QUEUED if due == "now" else TaskStatus.SCHEDULED
    assert (record.status, record.attempts) == (expected, 0)
    assert record.progress is None and record.yields == []
    await clock.advance(5)
    [second] = await claim(backend, clock)
    update = ProgressUpdate(task_id, second.token, progress=Progress(1, 6))
    assert await backend.storage.report([update], now=clock.time()) == [True]
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.progress == Progress(1, 6) and record.yields == []


async def test_a_retrying_task_shows_the_failed_attempts_progress_until_the_next_starts(
    backend: Broker, clock: FakeClock
) -> None:
    """A retry keeps the failed attempt's progress next to its error (where it failed), and
    the next attempt starts without it."""
    task_id = await enqueue_one(backend, clock, retries=1)
    [first] = await claim(backend, clock)
    update = ProgressUpdate(task_id, first.token, progress=Progress(3, 6))
    assert await backend.storage.report([update], now=clock.time()) == [True]
    await backend.complete([retry(first, clock.time() + 5)], now=clock.time())
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.status is TaskStatus.RETRYING
    assert record.progress == Progress(3, 6) and record.error is not None
    await clock.advance(5)
    [second] = await claim(backend, clock)
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and second.attempt == 2 and record.progress is None
