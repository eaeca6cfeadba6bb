"""Conformance: a Hypothesis state machine over the broker contract, under a fake clock.

Random programs of enqueue (priority, retries, delay), claim, complete (DONE, RETRY, FAILED,
RELEASE with current or stale tokens), extend, cancel, progress reports, checkpoints and clock
moves (past leases too) run against one backend; after every step the invariants are checked:

* no message is lost: every enqueued id has a record, and at the end every task can be driven
  to a terminal state by claiming and completing what is left;
* one terminal outcome: a terminal record never changes again;
* ``attempts <= retries + 1``;
* fencing: tokens only grow, a re-delivery carries a higher token, and a write with a stale
  token is refused and changes nothing;
* checkpoints: every one accepted reads back, across every later claim, retry and release;
* stats agree with the records, and at the end every task's events tell its story: enqueued
  first, one RUNNING per delivery, exactly one terminal event.

Each machine instance runs its coroutines on a private event loop (closed in teardown) and
gets its backend from the kind's factory (see ``conftest.py``), so it works for every kind.
Queue names are unique per instance, so a backend shared between examples cannot leak state.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from taskflow.abc import (
    Broker,
    CancelResult,
    Checkpoint,
    Delivery,
    ErrorInfo,
    EventKind,
    Lease,
    LeaseState,
    Outcome,
    OutcomeKind,
    Progress,
    ProgressUpdate,
    TaskMessage,
    TaskRecord,
    TaskStatus,
    encode_value,
)
from taskflow.testing import FakeClock

from ._helpers import PAYLOAD
from .conftest import BackendFactory

T = TypeVar("T")

_WAITING = {TaskStatus.QUEUED, TaskStatus.SCHEDULED, TaskStatus.RETRYING}
_TERMINAL_EVENTS = {EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED, EventKind.EXPIRED}
_HELD_MAX = 12


def _terminal_view(record: TaskRecord) -> tuple[Any, ...]:
    """What must never change once a task is terminal."""
    return (
        record.status,
        record.result,
        record.error,
        record.finished_at,
        record.attempts,
        record.token,
        record.result_expires_at,
        record.yields,
        record.progress,
    )


class BrokerMachine(RuleBasedStateMachine):
    """Drives one backend through random programs; subclassed per kind with its factory."""

    factory: ClassVar[BackendFactory]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.context = type(self).factory()
        self.broker: Broker = self.run(self.context.__aenter__())
        prefix = uuid.uuid4().hex[:8]
        self.queues = [f"sm-{prefix}-a", f"sm-{prefix}-b"]
        self.retries: dict[str, int] = {}
        self.max_token: dict[str, int] = {}
        self.terminal: dict[str, tuple[Any, ...]] = {}
        self.held: list[Delivery] = []
        self.deliveries: Counter[str] = Counter()
        #: Checkpoints accepted so far, per task: they must survive whatever happens next.
        self.checkpoints: dict[str, dict[str, bytes]] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            if self.retries:
                self.drain_and_check_nothing_lost()
        finally:
            try:
                self.run(self.context.__aexit__(None, None, None))
            finally:
                self.loop.close()

    # -- helpers ----------------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.clock.time()

    def record(self, task_id: str) -> TaskRecord:
        record = self.run(self.broker.storage.get(task_id, now=self.now))
        assert record is not None, f"task {task_id} was lost"
        return record

    def live_holder_of(self, queue: str, dedup_key: str) -> bool:
        """Whether a live task of `queue` holds `dedup_key`."""
        records = self.run(self.broker.storage.get_many(list(self.retries), now=self.now))
        return any(
            r is not None
            and r.queue == queue
            and r.dedup_key == dedup_key
            and not r.status.terminal
            for r in records
        )

    def hold(self, delivery: Delivery) -> None:
        self.held.append(delivery)
        if len(self.held) > _HELD_MAX:
            del self.held[0]

    def check_claimed(self, deliveries: list[Delivery], limit: int) -> None:
        assert len(deliveries) <= limit
        assert len({d.task_id for d in deliveries}) == len(deliveries), "claimed twice at once"
        for delivery in deliveries:
            task_id = delivery.task_id
            assert task_id in self.retries, f"delivered an unknown task {task_id}"
            assert task_id not in self.terminal, f"delivered {task_id} after its outcome"
            assert delivery.token > self.max_token.get(task_id, 0), "token did not grow"
            assert 1 <= delivery.attempt <= self.retries[task_id] + 1
            self.max_token[task_id] = delivery.token
            self.deliveries[task_id] += 1
            self.hold(delivery)

    # -- rules ------------------------------------------------------------------------------

    @rule(
        queue=st.sampled_from([0, 1]),
        priority=st.integers(-2, 2),
        retries=st.integers(0, 2),
        delay=st.sampled_from([0.0, 0.0, 5.0, 30.0]),
        dedup=st.sampled_from([None, None, "k1", "k2"]),
    )
    def enqueue(
        self, queue: int, priority: int, retries: int, delay: float, dedup: str | None
    ) -> None:
        name = self.queues[queue]
        msg = TaskMessage(
            id=self.broker.new_task_id(name),
            name="sm.task",
            queue=name,
            payload=PAYLOAD,
            priority=priority,
            retries=retries,
            eta=self.now + delay if delay else None,
            dedup_key=dedup,
        )
        [result] = self.run(self.broker.enqueue([msg], now=self.now))
        if result.created:
            assert result.task_id == msg.id
            self.retries[msg.id] = retries
            status = self.record(msg.id).status
            assert status is (TaskStatus.SCHEDULED if delay else TaskStatus.QUEUED)
        else:
            # No dedup TTL here: only a live task with that key may stand for the message.
            assert dedup is not None and result.task_id in self.retries
            assert not self.record(result.task_id).status.terminal

    @rule(
        order=st.sampled_from([(0,), (1,), (0, 1), (1, 0)]),
        limit=st.sampled_from([1, 1, 2, 5]),
        lease_s=st.sampled_from([5.0, 20.0]),
        worker=st.sampled_from(["w1", "w2"]),
    )
    def claim(self, order: tuple[int, ...], limit: int, lease_s: float, worker: str) -> None:
        queues = [self.queues[i] for i in order]
        deliveries = self.run(
            self.broker.claim(queues, limit=limit, lease_s=lease_s, now=self.now, worker_id=worker)
        )
        self.check_claimed(deliveries, limit)
        for delivery in deliveries:
            record = self.record(delivery.task_id)
            assert record.status is TaskStatus.RUNNING and record.token == delivery.token
            assert record.attempts == delivery.attempt and record.worker_id == worker

    @precondition(lambda self: bool(self.held))
    @rule(
        pick=st.integers(0, _HELD_MAX),
        kind=st.sampled_from(
            [OutcomeKind.DONE, OutcomeKind.FAILED, OutcomeKind.RETRY, OutcomeKind.RELEASE]
        ),
        delay=st.sampled_from([None, 0.0, 10.0]),
    )
    def complete(self, pick: int, kind: OutcomeKind, delay: float | None) -> None:
        delivery = self.held[pick % len(self.held)]
        task_id = delivery.task_id
        before = self.record(task_id)
        current = before.status is TaskStatus.RUNNING and before.token == delivery.token
        if kind is OutcomeKind.RETRY and delivery.attempt > self.retries[task_id]:
            kind = OutcomeKind.FAILED  # what a worker does when the retries are spent
        outcome = Outcome(
            task_id,
            delivery.token,
            kind,
            result=encode_value(delivery.token) if kind is OutcomeKind.DONE else None,
            error=None if kind is OutcomeKind.DONE else ErrorInfo("E", "sm"),
            retry_at=None if delay is None else self.now + delay,
            result_expires_at=self.now + 10_000,
        )
        [accepted] = self.run(self.broker.complete([outcome], now=self.now))
        assert accepted == current, (before, delivery, outcome)
        after = self.record(task_id)
        if not accepted:
            assert _terminal_view(after) == _terminal_view(before), "a refused write changed it"
            assert after.status is before.status
            return
        if kind is OutcomeKind.RETRY:
            assert after.status is TaskStatus.RETRYING and after.attempts == before.attempts
        elif kind is OutcomeKind.RELEASE:
            assert after.status in (TaskStatus.QUEUED, TaskStatus.SCHEDULED)
            assert after.attempts == before.attempts - 1
        else:
            assert after.status.terminal and after.finished_at == self.now

    @precondition(lambda self: bool(self.held))
    @rule(pick=st.integers(0, _HELD_MAX), lease_s=st.sampled_from([5.0, 20.0]))
    def extend(self, pick: int, lease_s: float) -> None:
        delivery = self.held[pick % len(self.held)]
        before = self.record(delivery.task_id)
        current = before.status is TaskStatus.RUNNING and before.token == delivery.token
        [state] = self.run(
            self.broker.extend(
                [Lease(delivery.task_id, delivery.token)], lease_s=lease_s, now=self.now
            )
        )
        if not current:
            assert state is LeaseState.LOST
        else:
            assert state is (LeaseState.CANCEL if before.cancel_requested else LeaseState.OK)

    @precondition(lambda self: bool(self.held))
    @rule(pick=st.integers(0, _HELD_MAX), done=st.integers(0, 5))
    def report(self, pick: int, done: int) -> None:
        delivery = self.held[pick % len(self.held)]
        before = self.record(delivery.task_id)
        current = before.status is TaskStatus.RUNNING and before.token == delivery.token
        update = ProgressUpdate(delivery.task_id, delivery.token, progress=Progress(done, 5))
        [applied] = self.run(self.broker.storage.report([update], now=self.now))
        assert applied == current
        after = self.record(delivery.task_id)
        assert after.progress == (Progress(done, 5) if current else before.progress)

    @precondition(lambda self: bool(self.held))
    @rule(pick=st.integers(0, _HELD_MAX), name=st.sampled_from(["a", "b"]), value=st.binary())
    def checkpoint(self, pick: int, name: str, value: bytes) -> None:
        """A checkpoint is accepted exactly when its token runs the task, and every one accepted
        so far reads back, whatever claims, retries, releases and lapses came between."""
        delivery = self.held[pick % len(self.held)]
        task_id = delivery.task_id
        before = self.record(task_id)
        current = before.status is TaskStatus.RUNNING and before.token == delivery.token
        entry = Checkpoint(task_id, delivery.token, name, value)
        [accepted] = self.run(self.broker.storage.save_checkpoints([entry], now=self.now))
        assert accepted == current
        if accepted:
            self.checkpoints.setdefault(task_id, {})[name] = value
        stored = self.run(self.broker.storage.checkpoints(task_id))
        assert stored == self.checkpoints.get(task_id, {})

    @precondition(lambda self: bool(self.retries))
    @rule(pick=st.integers(0, 1000))
    def cancel(self, pick: int) -> None:
        task_ids = list(self.retries)
        task_id = task_ids[pick % len(task_ids)]
        before = self.record(task_id)
        [result] = self.run(self.broker.cancel([task_id], now=self.now))
        after = self.record(task_id)
        if before.status.terminal:
            assert result is CancelResult.ALREADY_TERMINAL
        elif before.status is TaskStatus.RUNNING:
            assert result is CancelResult.REQUESTED and after.cancel_requested
            assert after.status is TaskStatus.RUNNING
        else:
            assert before.status in _WAITING
            assert result is CancelResult.CANCELLED and after.status is TaskStatus.CANCELLED

    @rule(seconds=st.sampled_from([0.5, 3.0, 6.0, 15.0, 25.0]))
    def advance(self, seconds: float) -> None:
        self.run(self.clock.advance(seconds))

    @precondition(lambda self: bool(self.terminal))
    @rule(pick=st.integers(0, 1000))
    def requeue_dead(self, pick: int) -> None:
        task_ids = list(self.terminal)
        old_id = task_ids[pick % len(task_ids)]
        old = self.record(old_id)
        if old.dedup_key is not None and self.live_holder_of(old.queue, old.dedup_key):
            return  # covered by test_requeue_dead_while_its_dedup_key_is_taken
        new_id = self.broker.new_task_id(old.queue)
        dead = {r.id for r in self.run(self.broker.dead_letters(old.queue, limit=1000))}
        [result] = self.run(self.broker.requeue_dead([old_id], now=self.now, new_ids=[new_id]))
        if old_id not in dead:
            assert result is None
            return
        assert old.status is TaskStatus.FAILED and result == new_id
        self.retries[new_id] = self.retries[old_id]
        new = self.record(new_id)
        assert new.status is TaskStatus.QUEUED and new.attempts == 0
        assert new.requeued_from == old_id

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def nothing_lost_terminal_stays_attempts_bounded(self) -> None:
        task_ids = list(self.retries)
        if not task_ids:
            return
        records = self.run(self.broker.storage.get_many(task_ids, now=self.now))
        for task_id, record in zip(task_ids, records, strict=True):
            assert record is not None, f"task {task_id} was lost"
            assert record.attempts <= self.retries[task_id] + 1, record
            assert record.token >= self.max_token.get(task_id, 0), "token went back"
            if task_id in self.terminal:
                assert _terminal_view(record) == self.terminal[task_id], "terminal changed"
            elif record.status.terminal:
                self.terminal[task_id] = _terminal_view(record)
                if record.status is TaskStatus.FAILED and record.error is not None:
                    assert record.error.type in ("E", "LeaseExpired")

    @rule()
    def stats_match_the_records(self) -> None:
        """A rule rather than an invariant: it costs several round trips on a server."""
        if not self.retries:
            return
        records = self.run(self.broker.storage.get_many(list(self.retries), now=self.now))
        for queue in self.queues:
            [stats] = self.run(self.broker.stats([queue], now=self.now))
            mine = [r for r in records if r is not None and r.queue == queue]
            live = sum(1 for r in mine if not r.status.terminal)
            running = sum(1 for r in mine if r.status is TaskStatus.RUNNING)
            assert stats.queued + stats.scheduled + stats.running == live, (stats, live)
            assert stats.running == running, (stats, running)
            dead = self.run(self.broker.dead_letters(queue, limit=1000))
            assert stats.dead == len(dead)
            assert all(r.status is TaskStatus.FAILED for r in dead)

    # -- the end: everything left can still be finished -------------------------------------

    def drain_and_check_nothing_lost(self) -> None:
        for _ in range(20):
            self.run(self.clock.advance(1000))
            deliveries = self.run(
                self.broker.claim(
                    self.queues, limit=1000, lease_s=1, now=self.now, worker_id="drainer"
                )
            )
            self.check_claimed(deliveries, 1000)
            outcomes = [
                Outcome(d.task_id, d.token, OutcomeKind.DONE, result_expires_at=self.now + 10)
                for d in deliveries
            ]
            self.run(self.broker.complete(outcomes, now=self.now))
            self.nothing_lost_terminal_stays_attempts_bounded()
            if len(self.terminal) == len(self.retries):
                self.check_event_streams()
                return
        pending = {t: self.record(t).status for t in self.retries if t not in self.terminal}
        raise AssertionError(f"tasks never reached a terminal state: {pending}")

    def check_event_streams(self) -> None:
        """Every task's events: enqueued first, one RUNNING per delivery, one terminal event,
        and after it at most its requeue."""
        kinds: dict[str, list[EventKind]] = {}
        for queue in self.queues:
            cursor: str | None = None
            while events := self.run(self.broker.storage.read_events(queue, after=cursor)):
                for event in events:
                    kinds.setdefault(event.task_id, []).append(event.kind)
                cursor = events[-1].cursor
        for task_id in self.retries:
            seen = kinds.get(task_id, [])
            assert seen and seen[0] in (EventKind.QUEUED, EventKind.SCHEDULED), (task_id, seen)
            assert seen.count(EventKind.RUNNING) == self.deliveries[task_id], (task_id, seen)
            endings = [i for i, kind in enumerate(seen) if kind in _TERMINAL_EVENTS]
            assert len(endings) == 1, (task_id, seen)
            assert set(seen[endings[0] + 1 :]) <= {EventKind.REQUEUED}, (task_id, seen)


def test_broker_state_machine(backend_factory: BackendFactory, backend_kind: str) -> None:
    """Run the state machine against this kind (a machine class per kind, with its factory)."""
    machine = type(
        f"BrokerMachine_{backend_kind}",
        (BrokerMachine,),
        {"factory": staticmethod(backend_factory)},
    )
    run_state_machine_as_test(machine, settings=settings(stateful_step_count=50, deadline=None))
