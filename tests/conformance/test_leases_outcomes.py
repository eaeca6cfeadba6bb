"""Conformance: leases and fencing, outcomes (retry, release, terminal), cancel, dead letters,
result TTL and progress reports."""

from __future__ import annotations

import pytest

from taskflow.abc import (
    Broker,
    CancelResult,
    ErrorInfo,
    Lease,
    LeaseState,
    Outcome,
    OutcomeKind,
    Progress,
    ProgressUpdate,
    TaskStatus,
    decode_message,
    encode_value,
)
from taskflow.testing import FakeClock

from ._helpers import TTL_S, claim, done, enqueue_one, failed, message, release, retry


async def status_of(backend: Broker, clock: FakeClock, task_id: str) -> TaskStatus:
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None, task_id
    return record.status


# -- leases and fencing ---------------------------------------------------------------------


async def test_lapsed_lease_is_redelivered_with_a_higher_token(
    backend: Broker, clock: FakeClock
) -> None:
    task_id = await enqueue_one(backend, clock, retries=3)
    [first] = await claim(backend, clock, lease_s=10, worker_id="w1")
    await clock.advance(5)
    assert await claim(backend, clock, worker_id="w2") == []
    await clock.advance(6)
    [second] = await claim(backend, clock, lease_s=10, worker_id="w2")
    assert second.task_id == task_id
    assert second.token > first.token and second.attempt == 2
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.worker_id == "w2" and record.attempts == 2

    # The zombie's writes are refused and change nothing.
    assert await backend.complete([done(first, clock, "zombie")], now=clock.time()) == [False]
    lost = await backend.extend([Lease(task_id, first.token)], lease_s=10, now=clock.time())
    assert lost == [LeaseState.LOST]
    zombie_report = ProgressUpdate(task_id, first.token, progress=Progress(1, 2))
    assert await backend.storage.report([zombie_report], now=clock.time()) == [False]
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.status is TaskStatus.RUNNING and record.progress is None

    assert await backend.complete([done(second, clock, "real")], now=clock.time()) == [True]
    final = await backend.storage.get(task_id, now=clock.time())
    assert final is not None and final.result == encode_value("real")


async def test_extend_keeps_a_lease_alive(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock, lease_s=10)
    lease = Lease(task_id, delivery.token)
    for _ in range(5):
        await clock.advance(8)
        assert await backend.extend([lease], lease_s=10, now=clock.time()) == [LeaseState.OK]
    assert clock.time() - delivery.lease_expires_at > 20  # well past the original expiry
    await clock.advance(8)
    assert await claim(backend, clock, worker_id="other") == []
    assert await backend.next_due(["default"], now=clock.time()) == clock.time() + 2
    assert await backend.complete([done(delivery, clock)], now=clock.time()) == [True]


async def test_extend_batch_answers_per_lease(backend: Broker, clock: FakeClock) -> None:
    live = await enqueue_one(backend, clock)
    ended = await enqueue_one(backend, clock)
    d_live, d_ended = await claim(backend, clock)
    await backend.complete([done(d_ended, clock)], now=clock.time())
    states = await backend.extend(
        [Lease(live, d_live.token), Lease(ended, d_ended.token), Lease("unknown", 1)],
        lease_s=10,
        now=clock.time(),
    )
    assert states == [LeaseState.OK, LeaseState.LOST, LeaseState.LOST]


async def test_lapsed_lease_without_attempts_is_dead_lettered(
    backend: Broker, clock: FakeClock
) -> None:
    task_id = await enqueue_one(backend, clock, retries=1)
    [first] = await claim(backend, clock, lease_s=10)
    await clock.advance(11)
    [second] = await claim(backend, clock, lease_s=10)
    assert second.attempt == 2
    await clock.advance(11)
    assert await claim(backend, clock) == []
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.status is TaskStatus.FAILED
    assert record.error is not None and record.error.type == "LeaseExpired"
    assert "renew" in record.error.message
    assert record.attempts == 2 and record.finished_at == clock.time()
    assert record.result_expires_at is not None and record.result_expires_at > clock.time()
    assert [r.id for r in await backend.dead_letters("default")] == [task_id]
    assert await backend.complete([done(second, clock)], now=clock.time()) == [False]
    assert first.token < second.token


async def test_outcome_after_lapse_but_before_reclaim_is_accepted(
    backend: Broker, clock: FakeClock
) -> None:
    task_id = await enqueue_one(backend, clock, retries=2)
    [delivery] = await claim(backend, clock, lease_s=10)
    await clock.advance(15)
    # Nobody claimed it again: its token is still the current one.
    assert await backend.complete([done(delivery, clock)], now=clock.time()) == [True]
    assert await claim(backend, clock) == []
    assert await status_of(backend, clock, task_id) is TaskStatus.DONE


# -- retry and release ----------------------------------------------------------------------


async def test_retry_spends_the_attempt_and_waits(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock, retries=2)
    [first] = await claim(backend, clock)
    retry_at = clock.time() + 30
    assert await backend.complete([retry(first, retry_at)], now=clock.time()) == [True]
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.status is TaskStatus.RETRYING
    assert record.attempts == 1 and record.error == ErrorInfo("ValueError", "try again")
    assert await claim(backend, clock) == []
    assert await backend.next_due(["default"], now=clock.time()) == retry_at
    [stats] = await backend.stats(["default"], now=clock.time())
    assert (stats.scheduled, stats.queued, stats.running) == (1, 0, 0)
    await clock.advance(30)
    [second] = await claim(backend, clock)
    assert second.attempt == 2 and second.token > first.token
    assert await backend.complete([retry(first, None)], now=clock.time()) == [False]


async def test_retry_due_now_is_claimable_at_once(backend: Broker, clock: FakeClock) -> None:
    await enqueue_one(backend, clock, retries=1)
    [first] = await claim(backend, clock)
    await backend.complete([retry(first, None)], now=clock.time())
    [second] = await claim(backend, clock)
    assert second.attempt == 2


async def test_release_refunds_the_attempt(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    [first] = await claim(backend, clock)
    assert await backend.complete([release(first)], now=clock.time()) == [True]
    assert await status_of(backend, clock, task_id) is TaskStatus.QUEUED
    [second] = await claim(backend, clock)
    assert second.attempt == 1 and second.token > first.token
    later = clock.time() + 5
    assert await backend.complete([release(second, later)], now=clock.time()) == [True]
    assert await status_of(backend, clock, task_id) is TaskStatus.SCHEDULED
    assert await claim(backend, clock) == []
    await clock.advance(5)
    [third] = await claim(backend, clock)
    assert third.attempt == 1
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.attempts == 1


# -- one terminal outcome -------------------------------------------------------------------


async def test_first_terminal_outcome_wins(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock)
    first, second = await backend.complete(
        [done(delivery, clock, 1), done(delivery, clock, 2)], now=clock.time()
    )
    assert (first, second) == (True, False)
    assert await backend.complete([failed(delivery, clock)], now=clock.time()) == [False]
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.status is TaskStatus.DONE
    assert record.result == encode_value(1) and record.error is None


async def test_cancel_then_complete(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock)
    assert await backend.cancel([task_id], now=clock.time()) == [CancelResult.REQUESTED]
    lease = Lease(task_id, delivery.token)
    assert await backend.extend([lease], lease_s=10, now=clock.time()) == [LeaseState.CANCEL]
    cancelled = Outcome(task_id, delivery.token, OutcomeKind.CANCELLED)
    assert await backend.complete([cancelled], now=clock.time()) == [True]
    assert await backend.complete([done(delivery, clock)], now=clock.time()) == [False]
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.status is TaskStatus.CANCELLED
    assert record.cancel_requested


async def test_complete_then_cancel(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock)
    assert await backend.complete([done(delivery, clock)], now=clock.time()) == [True]
    assert await backend.cancel([task_id], now=clock.time()) == [CancelResult.ALREADY_TERMINAL]
    assert await status_of(backend, clock, task_id) is TaskStatus.DONE


async def test_cancel_of_queued_beats_a_late_outcome(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock, retries=1)
    [delivery] = await claim(backend, clock)
    await backend.complete([retry(delivery, None)], now=clock.time())
    assert await backend.cancel([task_id], now=clock.time()) == [CancelResult.CANCELLED]
    assert await backend.complete([done(delivery, clock)], now=clock.time()) == [False]
    assert await status_of(backend, clock, task_id) is TaskStatus.CANCELLED


async def test_stored_outcome_is_not_delivered_again(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock, retries=5)
    [delivery] = await claim(backend, clock, lease_s=10)
    assert await backend.complete([done(delivery, clock)], now=clock.time()) == [True]
    await clock.advance(100)  # far past the lease: nothing may come back
    assert await claim(backend, clock) == []
    assert await backend.next_due(["default"], now=clock.time()) is None
    assert await status_of(backend, clock, task_id) is TaskStatus.DONE


async def test_expired_outcome_is_terminal(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock)
    expired = Outcome(task_id, delivery.token, OutcomeKind.EXPIRED)
    assert await backend.complete([expired], now=clock.time()) == [True]
    assert await status_of(backend, clock, task_id) is TaskStatus.EXPIRED
    assert await backend.cancel([task_id], now=clock.time()) == [CancelResult.ALREADY_TERMINAL]


# -- cancel ---------------------------------------------------------------------------------


async def test_cancel_in_every_state(backend: Broker, clock: FakeClock) -> None:
    queued = await enqueue_one(backend, clock)
    scheduled = await enqueue_one(backend, clock, eta=clock.time() + 60)
    retrying = await enqueue_one(backend, clock, retries=1, priority=3)
    running = await enqueue_one(backend, clock, priority=2)
    [d_retrying, d_running] = await claim(backend, clock, limit=2)
    assert (d_retrying.task_id, d_running.task_id) == (retrying, running)
    await backend.complete([retry(d_retrying, clock.time() + 10)], now=clock.time())

    results = await backend.cancel(
        [queued, scheduled, retrying, running, "unknown"], now=clock.time()
    )
    assert results == [
        CancelResult.CANCELLED,
        CancelResult.CANCELLED,
        CancelResult.CANCELLED,
        CancelResult.REQUESTED,
        CancelResult.NOT_FOUND,
    ]
    for task_id in (queued, scheduled, retrying):
        record = await backend.storage.get(task_id, now=clock.time())
        assert record is not None and record.status is TaskStatus.CANCELLED
        assert record.finished_at == clock.time() and record.result_expires_at is not None
    running_record = await backend.storage.get(running, now=clock.time())
    assert running_record is not None
    assert running_record.status is TaskStatus.RUNNING and running_record.cancel_requested
    assert await backend.cancel([running], now=clock.time()) == [CancelResult.REQUESTED]

    await clock.advance(100)
    assert await claim(backend, clock) == []  # none of the cancelled ones come back


async def test_lapsed_cancel_requested_task_is_not_run_again(
    backend: Broker, clock: FakeClock
) -> None:
    task_id = await enqueue_one(backend, clock, retries=3)
    [_] = await claim(backend, clock, lease_s=10)
    await backend.cancel([task_id], now=clock.time())
    await clock.advance(11)
    redelivered = await claim(backend, clock)
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None
    if redelivered:  # a backend may hand it out once more; its worker must learn to stop
        states = await backend.extend(
            [Lease(task_id, redelivered[0].token)], lease_s=10, now=clock.time()
        )
        assert states == [LeaseState.CANCEL]
    else:
        assert record.status is TaskStatus.CANCELLED


# -- dead letters ---------------------------------------------------------------------------


async def test_dead_letters_newest_first_and_requeue(backend: Broker, clock: FakeClock) -> None:
    ids = [await enqueue_one(backend, clock, retries=2) for _ in range(3)]
    for delivery in await claim(backend, clock):
        await clock.advance(1)
        await backend.complete([failed(delivery, clock)], now=clock.time())
    dead = await backend.dead_letters("default")
    assert [r.id for r in dead] == ids[::-1]
    assert all(r.status is TaskStatus.FAILED and r.error is not None for r in dead)
    assert [r.id for r in await backend.dead_letters("default", limit=1, offset=1)] == [ids[1]]
    assert await backend.dead_letters("other") == []

    new_id = backend.new_task_id("default")
    requeued = await backend.requeue_dead(
        [ids[0], "unknown"], now=clock.time(), new_ids=[new_id, "x"]
    )
    assert requeued == [new_id, None]
    new = await backend.storage.get(new_id, now=clock.time())
    assert new is not None
    assert new.status is TaskStatus.QUEUED and new.attempts == 0 and new.requeued_from == ids[0]
    assert new.retries == 2 and new.name == "tests.task"
    old = await backend.storage.get(ids[0], now=clock.time())
    assert old is not None and old.status is TaskStatus.FAILED
    assert [r.id for r in await backend.dead_letters("default")] == [ids[2], ids[1]]
    [stats] = await backend.stats(["default"], now=clock.time())
    assert (stats.dead, stats.queued) == (2, 1)

    [delivery] = await claim(backend, clock)
    assert delivery.task_id == new_id and delivery.attempt == 1
    assert decode_message(delivery.data).requeued_from == ids[0]
    # Requeued once: it is no longer a dead letter, a second requeue does nothing.
    again = await backend.requeue_dead([ids[0]], now=clock.time(), new_ids=["another"])
    assert again == [None]


async def test_only_failed_tasks_are_dead_letters(backend: Broker, clock: FakeClock) -> None:
    live = await enqueue_one(backend, clock)
    finished = await enqueue_one(backend, clock)
    [_, delivery] = await claim(backend, clock)
    await backend.complete([done(delivery, clock)], now=clock.time())
    assert await backend.dead_letters("default") == []
    result = await backend.requeue_dead([live, finished], now=clock.time(), new_ids=["n1", "n2"])
    assert result == [None, None]


# -- result TTL -----------------------------------------------------------------------------


async def test_result_expires_but_status_stays(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock)
    await backend.complete([done(delivery, clock, "value")], now=clock.time())
    await clock.advance(TTL_S - 1)
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.result == encode_value("value")
    assert not record.result_expired
    await clock.advance(1)
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.status is TaskStatus.DONE
    assert record.result is None and record.result_expired


async def test_backend_decided_endings_use_the_broker_ttl(
    backend: Broker, clock: FakeClock
) -> None:
    backend.result_ttl_s = 50.0
    task_id = await enqueue_one(backend, clock)
    await backend.cancel([task_id], now=clock.time())
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.result_expires_at == clock.time() + 50.0


# -- progress reports -----------------------------------------------------------------------


async def test_report_progress_and_yields(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock)
    queued_update = ProgressUpdate(task_id, 1, progress=Progress(0, 3))
    assert await backend.storage.report([queued_update], now=clock.time()) == [False]
    [delivery] = await claim(backend, clock)
    updates = [
        ProgressUpdate(task_id, delivery.token, progress=Progress(1, 3, "one")),
        ProgressUpdate(task_id, delivery.token, yields=[encode_value("a"), encode_value("b")]),
        ProgressUpdate(task_id, delivery.token + 1, progress=Progress(3, 3)),
        ProgressUpdate("unknown", 1, progress=Progress(3, 3)),
    ]
    assert await backend.storage.report(updates, now=clock.time()) == [True, True, False, False]
    more = ProgressUpdate(task_id, delivery.token, progress=Progress(2, 3), yields=[b"\xa1c"])
    assert await backend.storage.report([more], now=clock.time()) == [True]
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None
    assert record.progress == Progress(2, 3)
    assert record.yields == [encode_value("a"), encode_value("b"), b"\xa1c"]
    assert await backend.storage.report([], now=clock.time()) == []
    await backend.complete([done(delivery, clock)], now=clock.time())
    assert await backend.storage.report([more], now=clock.time()) == [False]


async def test_lapsed_task_finished_by_its_old_worker_is_not_redelivered(
    backend: Broker, clock: FakeClock
) -> None:
    first = await enqueue_one(backend, clock, retries=2)
    second = await enqueue_one(backend, clock, retries=2)
    _, d2 = await claim(backend, clock, lease_s=10, worker_id="old")
    await clock.advance(11)
    # Both leases lapsed; one is re-delivered, the other is still the old worker's to finish.
    [redelivered] = await claim(backend, clock, limit=1, worker_id="new")
    assert redelivered.task_id == first
    assert await backend.complete([done(d2, clock)], now=clock.time()) == [True]
    assert await claim(backend, clock, limit=10, worker_id="new") == []
    assert await status_of(backend, clock, second) is TaskStatus.DONE


# Backends that do not pass a test yet: kind -> reason. The test runs anyway (a non-strict xfail),
# so a fix shows up as XPASS; remove the entry then.
#: Backend kinds with a known divergence here: {kind: reason}. Empty: every backend conforms.
KNOWN_GAPS: dict[str, str] = {}


async def test_requeue_dead_while_its_dedup_key_is_taken(
    backend: Broker, clock: FakeClock, backend_kind: str, request: pytest.FixtureRequest
) -> None:
    """Requeueing is an operator's decision: it creates the new task even if a live task holds
    the dead letter's dedup key now (dedup guards producers, not requeues)."""
    if backend_kind in KNOWN_GAPS:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_GAPS[backend_kind], strict=False))
    old = await enqueue_one(backend, clock, dedup_key="k")
    [delivery] = await claim(backend, clock)
    await backend.complete([failed(delivery, clock)], now=clock.time())
    live = await enqueue_one(backend, clock, dedup_key="k")  # the old one ended: allowed
    new_id = backend.new_task_id("default")
    assert await backend.requeue_dead([old], now=clock.time(), new_ids=[new_id]) == [new_id]
    new = await backend.storage.get(new_id, now=clock.time())
    assert new is not None and new.status is TaskStatus.QUEUED and new.requeued_from == old
    # Both are live; a producer's message with the key is still deduplicated.
    [result] = await backend.enqueue([message(backend, dedup_key="k")], now=clock.time())
    assert not result.created and result.task_id in (live, new_id)
    claimed = {d.task_id for d in await claim(backend, clock)}
    assert claimed == {live, new_id}
