"""Conformance: flows (issue 17), the contract of `Broker.enqueue` / `complete` / `cancel` /
`purge` for tasks linked to other tasks.

Waiting storage and readiness on the last parent (in the parent's own call), thousands of
children in one enqueue, the failure policies and their error text, cascades, WAIT outcomes and
their join's adoption (also when the join ends first), hedge races both ways, cancel and purge of
waiting tasks, a lapsed last lease cascading, `QueueStats.waiting`, `Storage.flow_tasks`, the
record fields, and the events with their details and `flow_id`.

Graphs are built as the flow API stores them: every message of a graph (or of a fan-out's
shards and join) in one `enqueue` call, each parent naming its children (``children``) and each
child its parents (``waits_for``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import anyio
import pytest

from taskflow.abc import (
    SKIPPED,
    SUPERSEDED,
    UPSTREAM_FAILED,
    Broker,
    CancelResult,
    Delivery,
    ErrorInfo,
    Event,
    EventKind,
    FailurePolicy,
    Lease,
    LeaseState,
    Outcome,
    OutcomeKind,
    TaskMessage,
    TaskOutcome,
    TaskRecord,
    TaskStatus,
    encode_value,
)
from taskflow.testing import FakeClock

from ._helpers import LEASE_S, TTL_S, claim, done, enqueue_one, failed, message

FLOW = "flow-1"


class Graph:
    """A flow graph built as the flow API stores it: nodes with their parents, turned into
    messages whose parents name their children, all enqueued in one call."""

    def __init__(self, broker: Broker, flow_id: str | None = FLOW) -> None:
        self.broker = broker
        self.flow_id = flow_id
        self.ids: dict[str, str] = {}
        self._specs: list[tuple[str, str, list[str], dict[str, Any]]] = []

    def node(
        self, name: str, *, after: Iterable[str] = (), queue: str = "default", **options: Any
    ) -> str:
        """Add node `name` after the nodes named in `after`; its task id."""
        task_id = self.broker.new_task_id(queue)
        self.ids[name] = task_id
        self._specs.append((name, queue, list(after), options))
        return task_id

    def messages(self, created_at: float = 0.0) -> list[TaskMessage]:
        """The graph's messages, made at `created_at` (the same for all, as a submit does)."""
        children: dict[str, list[tuple[str, str]]] = {name: [] for name in self.ids}
        for name, queue, after, _ in self._specs:
            for parent in after:
                children[parent].append((self.ids[name], queue))
        out = []
        for name, queue, after, options in self._specs:
            options = {"flow_id": self.flow_id, "node": name, "created_at": created_at, **options}
            if after:
                options["waits_for"] = [self.ids[p] for p in after]
            if children[name]:
                options["children"] = children[name]
            out.append(message(self.broker, queue, id=self.ids[name], **options))
        return out

    async def submit(self, clock: FakeClock) -> dict[str, str]:
        """Enqueue every node in one call; the ids by node name."""
        results = await self.broker.enqueue(self.messages(clock.time()), now=clock.time())
        assert all(r.created for r in results), results
        return self.ids


async def record_of(backend: Broker, clock: FakeClock, task_id: str) -> TaskRecord:
    """The record of `task_id`, which must exist."""
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None, task_id
    return record


async def status_of(backend: Broker, clock: FakeClock, task_id: str) -> TaskStatus:
    return (await record_of(backend, clock, task_id)).status


async def statuses(backend: Broker, clock: FakeClock, ids: Iterable[str]) -> list[TaskStatus]:
    ids = list(ids)
    records = await backend.storage.get_many(ids, now=clock.time())
    missing = [task_id for task_id, r in zip(ids, records, strict=True) if r is None]
    assert not missing, missing
    return [r.status for r in records if r is not None]


async def run_one(
    backend: Broker, clock: FakeClock, task_id: str, queue: str = "default", value: Any = "ok"
) -> Delivery:
    """Claim `task_id` (the only claimable task of `queue`) and complete it DONE."""
    [delivery] = await claim(backend, clock, (queue,))
    assert delivery.task_id == task_id
    assert await backend.complete([done(delivery, clock, value)], now=clock.time()) == [True]
    return delivery


async def claim_one(
    backend: Broker, clock: FakeClock, task_id: str, queue: str = "default", worker: str = "w1"
) -> Delivery:
    """Claim one task of `queue` as `worker`: it must be `task_id`."""
    [delivery] = await claim(backend, clock, (queue,), limit=1, worker_id=worker)
    assert delivery.task_id == task_id
    return delivery


def outcome(delivery: Delivery, kind: OutcomeKind, clock: FakeClock) -> Outcome:
    """A terminal outcome of `kind` for `delivery`, without a result or an error."""
    return Outcome(delivery.task_id, delivery.token, kind, result_expires_at=clock.time() + TTL_S)


def wait_outcome(delivery: Delivery) -> Outcome:
    """The outcome of a run that fanned out: the task waits for its join."""
    return Outcome(delivery.task_id, delivery.token, OutcomeKind.WAIT)


async def events_of(backend: Broker, task_id: str, queue: str = "default") -> list[Event]:
    """The events of `task_id` in `queue`'s stream, oldest first."""
    return [
        e for e in await backend.storage.read_events(queue, limit=100_000) if e.task_id == task_id
    ]


async def kinds_of(backend: Broker, task_id: str, queue: str = "default") -> list[EventKind]:
    return [e.kind for e in await events_of(backend, task_id, queue)]


def label(record: TaskRecord) -> str:
    """How an upstream error names a parent: its node name, else its task name, then its id."""
    return f"{record.node or record.name} ({record.id})"


def upstream_message(parent: TaskRecord) -> str:
    """The message of an `UPSTREAM_FAILED` / `SKIPPED` error caused by `parent`'s end."""
    head = f"{label(parent)} {parent.status.value}"
    error = parent.error
    return head if error is None else f"{head}: {error.type}: {error.message}"


# -- waiting storage and readiness ------------------------------------------------------------


async def test_a_child_is_stored_waiting_and_is_not_claimable(
    backend: Broker, clock: FakeClock
) -> None:
    graph = Graph(backend)
    graph.node("load")
    graph.node("report", after=["load"])
    ids = await graph.submit(clock)

    child = await record_of(backend, clock, ids["report"])
    assert child.status is TaskStatus.WAITING
    assert (child.flow_id, child.node, child.waits_for) == (FLOW, "report", [ids["load"]])
    assert (child.outcome_to, child.copy, child.attempts) == (None, False, 0)
    parent = await record_of(backend, clock, ids["load"])
    assert (parent.status, parent.flow_id, parent.node, parent.waits_for) == (
        TaskStatus.QUEUED,
        FLOW,
        "load",
        [],
    )
    [stats] = await backend.stats(["default"], now=clock.time())
    assert (stats.queued, stats.waiting, stats.scheduled, stats.running) == (1, 1, 0, 0)

    [delivery] = await claim(backend, clock)
    assert delivery.task_id == ids["load"]
    assert await claim(backend, clock) == []
    assert await backend.next_due(["default"], now=clock.time()) is not None  # the lease
    [event] = await events_of(backend, ids["report"])
    assert (event.kind, event.flow_id, event.detail) == (EventKind.WAITING, FLOW, None)


async def test_a_child_becomes_claimable_when_its_last_parent_ends_done(
    backend: Broker, clock: FakeClock
) -> None:
    graph = Graph(backend)
    graph.node("a")
    graph.node("b")
    graph.node("c", after=["a", "b"])
    ids = await graph.submit(clock)
    d_a, d_b = await claim(backend, clock)

    assert await backend.complete([done(d_a, clock)], now=clock.time()) == [True]
    assert await status_of(backend, clock, ids["c"]) is TaskStatus.WAITING
    assert await claim(backend, clock) == []
    await clock.advance(1)
    assert await backend.complete([done(d_b, clock)], now=clock.time()) == [True]
    # Ready in the parent's own call: no scan, no later step.
    assert await status_of(backend, clock, ids["c"]) is TaskStatus.QUEUED
    [stats] = await backend.stats(["default"], now=clock.time())
    assert (stats.queued, stats.waiting) == (1, 0)
    [event] = [e for e in await events_of(backend, ids["c"]) if e.kind is EventKind.QUEUED]
    assert (event.detail, event.at, event.flow_id) == ("ready", clock.time(), FLOW)
    [delivery] = await claim(backend, clock)
    assert (delivery.task_id, delivery.attempt) == (ids["c"], 1)


async def test_a_ready_child_wakes_a_worker_watching_its_queue(
    backend: Broker, clock: FakeClock
) -> None:
    graph = Graph(backend)
    graph.node("a")
    graph.node("b", after=["a"], queue="other")
    await graph.submit(clock)
    woken = anyio.Event()
    backend.watch_work(["other"], worker_id="w-other", callback=woken.set)
    try:
        # A watcher reads next_due before it sleeps: that waits for the subscription.
        assert await backend.next_due(["other"], now=clock.time()) is None
        [delivery] = await claim(backend, clock)
        await backend.complete([done(delivery, clock)], now=clock.time())
        with anyio.fail_after(10):
            await woken.wait()
    finally:
        await backend.unwatch_work(["other"], worker_id="w-other", now=clock.time())


async def test_a_child_with_a_later_eta_is_scheduled_when_ready(
    backend: Broker, clock: FakeClock
) -> None:
    graph = Graph(backend)
    graph.node("a")
    graph.node("b", after=["a"], eta=clock.time() + 60)
    ids = await graph.submit(clock)
    assert await status_of(backend, clock, ids["b"]) is TaskStatus.WAITING
    await run_one(backend, clock, ids["a"])
    assert await status_of(backend, clock, ids["b"]) is TaskStatus.SCHEDULED
    [event] = [e for e in await events_of(backend, ids["b"]) if e.kind is EventKind.SCHEDULED]
    assert event.detail == "ready"
    assert await claim(backend, clock) == []
    await clock.advance(60)
    [delivery] = await claim(backend, clock)
    assert delivery.task_id == ids["b"]


async def test_children_in_other_queues_become_ready(backend: Broker, clock: FakeClock) -> None:
    """A child in another queue (another hash slot on a Redis Cluster) is ready once the
    parent's `complete` returns."""
    graph = Graph(backend)
    graph.node("a")
    for i in range(5):
        graph.node(f"child{i}", after=["a"], queue=f"q{i}")
    ids = await graph.submit(clock)
    queues = tuple(f"q{i}" for i in range(5))
    assert await claim(backend, clock, queues) == []
    await run_one(backend, clock, ids["a"])
    for i in range(5):
        [delivery] = await claim(backend, clock, (f"q{i}",))
        assert delivery.task_id == ids[f"child{i}"]
        [stats] = await backend.stats([f"q{i}"], now=clock.time())
        assert stats.waiting == 0


async def test_a_child_waits_for_parents_in_several_queues(
    backend: Broker, clock: FakeClock
) -> None:
    graph = Graph(backend)
    for i in range(3):
        graph.node(f"p{i}", queue=f"q{i}")
    graph.node("join", after=["p0", "p1", "p2"])
    ids = await graph.submit(clock)
    for i in range(3):
        assert await status_of(backend, clock, ids["join"]) is TaskStatus.WAITING
        await run_one(backend, clock, ids[f"p{i}"], f"q{i}")
    [delivery] = await claim(backend, clock)
    assert delivery.task_id == ids["join"]


async def test_thousands_of_shards_and_their_join_in_one_enqueue(
    backend: Broker, clock: FakeClock
) -> None:
    n = 2000
    graph = Graph(backend)
    shards = [f"shard[{i}]" for i in range(n)]
    for name in shards:
        graph.node(name)
    graph.node("join", after=shards)
    ids = await graph.submit(clock)
    [stats] = await backend.stats(["default"], now=clock.time())
    assert (stats.queued, stats.waiting) == (n, 1)

    deliveries = await claim(backend, clock, limit=n)
    assert len(deliveries) == n
    first, last = deliveries[:-1], deliveries[-1]
    for start in range(0, len(first), 500):
        batch = [done(d, clock, i) for i, d in enumerate(first[start : start + 500])]
        assert all(await backend.complete(batch, now=clock.time()))
    assert await status_of(backend, clock, ids["join"]) is TaskStatus.WAITING
    await backend.complete([done(last, clock)], now=clock.time())
    [delivery] = await claim(backend, clock)
    assert delivery.task_id == ids["join"]


async def test_one_parent_with_thousands_of_children(backend: Broker, clock: FakeClock) -> None:
    n = 2000
    graph = Graph(backend)
    graph.node("load")
    for i in range(n):
        graph.node(f"c{i}", after=["load"])
    ids = await graph.submit(clock)
    await run_one(backend, clock, ids["load"])
    [stats] = await backend.stats(["default"], now=clock.time())
    assert (stats.queued, stats.waiting) == (n, 0)
    deliveries = await claim(backend, clock, limit=n + 1)
    assert sorted(d.task_id for d in deliveries) == sorted(ids[f"c{i}"] for i in range(n))


async def test_a_chain_is_claimable_one_node_at_a_time(backend: Broker, clock: FakeClock) -> None:
    graph = Graph(backend)
    names = [f"n{i}" for i in range(20)]
    for i, name in enumerate(names):
        graph.node(name, after=names[i - 1 : i])
    ids = await graph.submit(clock)
    for name in names:
        [delivery] = await claim(backend, clock)
        assert delivery.task_id == ids[name]
        await backend.complete([done(delivery, clock)], now=clock.time())
    assert await claim(backend, clock) == []
    assert set(await statuses(backend, clock, ids.values())) == {TaskStatus.DONE}


async def test_a_retried_parent_does_not_release_its_children(
    backend: Broker, clock: FakeClock
) -> None:
    graph = Graph(backend)
    graph.node("a", retries=1)
    graph.node("b", after=["a"])
    ids = await graph.submit(clock)
    [first] = await claim(backend, clock)
    retry = Outcome(first.task_id, first.token, OutcomeKind.RETRY, error=ErrorInfo("E", "x"))
    release = Outcome(first.task_id, first.token + 1, OutcomeKind.RELEASE)
    assert await backend.complete([retry], now=clock.time()) == [True]
    assert await status_of(backend, clock, ids["b"]) is TaskStatus.WAITING
    [second] = await claim(backend, clock)
    assert await backend.complete([release], now=clock.time()) == [True]
    assert await status_of(backend, clock, ids["b"]) is TaskStatus.WAITING
    await run_one(backend, clock, ids["a"])
    assert second.task_id == ids["a"]
    assert await status_of(backend, clock, ids["b"]) is TaskStatus.QUEUED


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_graphs_drain_as_the_model_says(
    backend: Broker, clock: FakeClock, seed: int
) -> None:
    """Random graphs over two queues, random policies and outcomes, drained by claiming what
    is claimable: every node is claimed at most once and only after each of its parents ended,
    and each ends as the model says (a parent without a value ends a FAIL child FAILED and a
    SKIP child CANCELLED; a RUN child, or one whose parents all ended DONE, runs)."""
    rng = random.Random(seed)
    graph = Graph(backend)
    parents: dict[str, list[str]] = {}
    policy: dict[str, FailurePolicy] = {}
    fails: dict[str, bool] = {}
    for i in range(40):
        name = f"n{i}"
        parents[name] = rng.sample(sorted(parents), k=min(len(parents), rng.randint(0, 3)))
        policy[name] = rng.choice(list(FailurePolicy))
        fails[name] = rng.random() < 0.2
        graph.node(name, after=parents[name], after_failure=policy[name], queue=rng.choice("ab"))
    ids = await graph.submit(clock)
    names = {task_id: name for name, task_id in ids.items()}
    claimed: set[str] = set()
    while deliveries := await claim(backend, clock, ("a", "b"), limit=7):
        for delivery in deliveries:
            name = names[delivery.task_id]
            assert name not in claimed
            claimed.add(name)
            ended = await statuses(backend, clock, [ids[p] for p in parents[name]])
            assert all(status.terminal for status in ended), name
        outcomes = [
            failed(d, clock) if fails[names[d.task_id]] else done(d, clock) for d in deliveries
        ]
        assert all(await backend.complete(outcomes, now=clock.time()))

    expected: dict[str, TaskStatus] = {}
    for name in ids:  # parents come first
        upstream_ended_badly = any(expected[p] is not TaskStatus.DONE for p in parents[name])
        if upstream_ended_badly and policy[name] is FailurePolicy.FAIL:
            expected[name] = TaskStatus.FAILED
        elif upstream_ended_badly and policy[name] is FailurePolicy.SKIP:
            expected[name] = TaskStatus.CANCELLED
        else:
            assert name in claimed
            expected[name] = TaskStatus.FAILED if fails[name] else TaskStatus.DONE
    assert dict(zip(ids, await statuses(backend, clock, ids.values()), strict=True)) == expected
    [a, b] = await backend.stats(["a", "b"], now=clock.time())
    assert (a.waiting, b.waiting, a.queued, b.queued) == (0, 0, 0, 0)


# -- failure policies and cascades ------------------------------------------------------------


@pytest.mark.parametrize("policy", list(FailurePolicy))
async def test_each_failure_policy(
    backend: Broker, clock: FakeClock, policy: FailurePolicy
) -> None:
    graph = Graph(backend)
    graph.node("load")
    graph.node("other")
    graph.node("report", after=["load", "other"], after_failure=policy)
    ids = await graph.submit(clock)
    d_load, d_other = await claim(backend, clock)
    await backend.complete([failed(d_load, clock, "KeyError")], now=clock.time())
    parent = await record_of(backend, clock, ids["load"])
    child = await record_of(backend, clock, ids["report"])
    expected_error = ErrorInfo(
        UPSTREAM_FAILED if policy is FailurePolicy.FAIL else SKIPPED,
        f"load ({ids['load']}) failed: KeyError: boom",
    )
    if policy is FailurePolicy.RUN:
        assert child.status is TaskStatus.WAITING
        await backend.complete([done(d_other, clock)], now=clock.time())
        [delivery] = await claim(backend, clock)
        assert delivery.task_id == ids["report"]
        return
    assert upstream_message(parent) == expected_error.message
    assert child.error == expected_error
    assert child.attempts == 0 and child.started_at is None
    assert child.finished_at == clock.time()
    assert child.result_expires_at is not None and child.result_expires_at > clock.time()
    if policy is FailurePolicy.FAIL:
        assert child.status is TaskStatus.FAILED
        assert [e.detail for e in await events_of(backend, ids["report"])] == [
            None,
            UPSTREAM_FAILED,
        ]
        assert await kinds_of(backend, ids["report"]) == [EventKind.WAITING, EventKind.FAILED]
    else:
        assert child.status is TaskStatus.CANCELLED
        assert await kinds_of(backend, ids["report"]) == [EventKind.WAITING, EventKind.CANCELLED]
    # The other parent's end changes nothing now.
    await backend.complete([done(d_other, clock)], now=clock.time())
    assert await record_of(backend, clock, ids["report"]) == child
    assert await claim(backend, clock) == []


async def test_an_upstream_failed_node_is_a_dead_letter_that_requeues_without_its_parents(
    backend: Broker, clock: FakeClock
) -> None:
    graph = Graph(backend)
    graph.node("a")
    graph.node("b", after=["a"])
    ids = await graph.submit(clock)
    [delivery] = await claim(backend, clock)
    await backend.complete([failed(delivery, clock)], now=clock.time())
    dead = await backend.dead_letters("default")
    assert sorted(r.id for r in dead) == sorted([ids["a"], ids["b"]])  # one finished_at
    [new_id] = await backend.requeue_dead([ids["b"]], now=clock.time(), new_ids=["requeued-b"])
    record = await record_of(backend, clock, "requeued-b")
    assert (record.status, record.flow_id, record.node, record.waits_for) == (
        TaskStatus.QUEUED,
        FLOW,
        "b",
        [],
    )
    [delivery] = await claim(backend, clock)
    assert delivery.task_id == new_id == "requeued-b"


async def test_an_upstream_error_names_the_task_when_the_parent_has_no_node(
    backend: Broker, clock: FakeClock
) -> None:
    parent_id, child_id = backend.new_task_id("default"), backend.new_task_id("default")
    await backend.enqueue(
        [
            message(backend, id=parent_id, name="shop.load", children=[(child_id, "default")]),
            message(backend, id=child_id, waits_for=[parent_id]),
        ],
        now=clock.time(),
    )
    [delivery] = await claim(backend, clock)
    await backend.complete([failed(delivery, clock)], now=clock.time())
    child = await record_of(backend, clock, child_id)
    assert child.error == ErrorInfo(
        UPSTREAM_FAILED, f"shop.load ({parent_id}) failed: ValueError: boom"
    )


async def test_a_failure_cascades_down_the_graph(backend: Broker, clock: FakeClock) -> None:
    graph = Graph(backend)
    graph.node("a")
    graph.node("b", after=["a"])
    graph.node("c", after=["b"], after_failure=FailurePolicy.SKIP)
    graph.node("d", after=["c"])
    graph.node("e", after=["c", "b"], after_failure=FailurePolicy.RUN)
    graph.node("f", after=["e"])
    graph.node("side", queue="other", after=["b"])
    ids = await graph.submit(clock)
    [delivery] = await claim(backend, clock)
    await backend.complete([failed(delivery, clock)], now=clock.time())

    a, b, c, d, side = [
        await record_of(backend, clock, ids[n]) for n in ("a", "b", "c", "d", "side")
    ]
    assert (b.status, c.status, d.status, side.status) == (
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
        TaskStatus.FAILED,
        TaskStatus.FAILED,
    )
    assert b.error == ErrorInfo(UPSTREAM_FAILED, upstream_message(a))
    assert c.error == ErrorInfo(SKIPPED, upstream_message(b))
    assert d.error == ErrorInfo(UPSTREAM_FAILED, upstream_message(c))
    assert side.error == ErrorInfo(UPSTREAM_FAILED, upstream_message(b))
    assert d.error.message == (
        f"c ({ids['c']}) cancelled: Skipped: b ({ids['b']}) failed: UpstreamFailed: "
        f"a ({ids['a']}) failed: ValueError: boom"
    )
    # e runs (its policy), and f waits for it.
    [delivery] = await claim(backend, clock)
    assert delivery.task_id == ids["e"]
    assert await status_of(backend, clock, ids["f"]) is TaskStatus.WAITING
    await backend.complete([done(delivery, clock)], now=clock.time())
    assert await status_of(backend, clock, ids["f"]) is TaskStatus.QUEUED


async def test_a_long_cascade_ends_every_node(backend: Broker, clock: FakeClock) -> None:
    graph = Graph(backend)
    names = [f"n{i}" for i in range(500)]
    for i, name in enumerate(names):
        graph.node(name, after=names[i - 1 : i])
    ids = await graph.submit(clock)
    [delivery] = await claim(backend, clock)
    await backend.complete([failed(delivery, clock)], now=clock.time())
    assert set(await statuses(backend, clock, ids.values())) == {TaskStatus.FAILED}
    [stats] = await backend.stats(["default"], now=clock.time())
    assert (stats.waiting, stats.queued) == (0, 0)


async def test_result_waiters_of_a_child_ended_upstream_wake(
    backend: Broker, clock: FakeClock
) -> None:
    graph = Graph(backend)
    graph.node("a")
    graph.node("b", after=["a"])
    ids = await graph.submit(clock)
    [delivery] = await claim(backend, clock)
    got: list[TaskOutcome] = []

    async def waiter() -> None:
        got.append(await backend.storage.wait(ids["b"], timeout=None, now=clock.time()))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            await backend.complete([failed(delivery, clock)], now=clock.time())
    [outcome] = got
    assert outcome.status is TaskStatus.FAILED
    assert outcome.error is not None and outcome.error.type == UPSTREAM_FAILED


@pytest.mark.parametrize("ending", ["cancelled", "expired"])
async def test_a_parent_cancelled_or_expired_by_its_worker(
    backend: Broker, clock: FakeClock, ending: str
) -> None:
    graph = Graph(backend)
    graph.node("a")
    graph.node("b", after=["a"])
    ids = await graph.submit(clock)
    [delivery] = await claim(backend, clock)
    kind = OutcomeKind.CANCELLED if ending == "cancelled" else OutcomeKind.EXPIRED
    await backend.complete([outcome(delivery, kind, clock)], now=clock.time())
    b = await record_of(backend, clock, ids["b"])
    assert b.status is TaskStatus.FAILED
    assert b.error == ErrorInfo(UPSTREAM_FAILED, f"a ({ids['a']}) {ending}")


async def test_a_lapsed_last_lease_cascades(backend: Broker, clock: FakeClock) -> None:
    graph = Graph(backend)
    graph.node("a")
    graph.node("b", after=["a"])
    graph.node("c", after=["a"], after_failure=FailurePolicy.RUN, queue="other")
    ids = await graph.submit(clock)
    await claim(backend, clock, lease_s=10)
    await clock.advance(11)
    assert await claim(backend, clock) == []  # settles the lapse: dead-lettered
    a = await record_of(backend, clock, ids["a"])
    assert a.error is not None and a.error.type == "LeaseExpired"
    b = await record_of(backend, clock, ids["b"])
    assert (b.status, b.error) == (
        TaskStatus.FAILED,
        ErrorInfo(UPSTREAM_FAILED, upstream_message(a)),
    )
    [delivery] = await claim(backend, clock, ("other",))
    assert delivery.task_id == ids["c"]


# -- cancel and purge -------------------------------------------------------------------------


async def test_cancel_a_waiting_task(backend: Broker, clock: FakeClock) -> None:
    graph = Graph(backend)
    graph.node("a")
    graph.node("b", after=["a"])
    graph.node("c", after=["b"])
    graph.node("d", after=["b"], after_failure=FailurePolicy.RUN)
    ids = await graph.submit(clock)
    assert await backend.cancel([ids["b"]], now=clock.time()) == [CancelResult.CANCELLED]
    b = await record_of(backend, clock, ids["b"])
    assert b.status is TaskStatus.CANCELLED and b.finished_at == clock.time()
    assert await kinds_of(backend, ids["b"]) == [EventKind.WAITING, EventKind.CANCELLED]
    c = await record_of(backend, clock, ids["c"])
    assert (c.status, c.error) == (
        TaskStatus.FAILED,
        ErrorInfo(UPSTREAM_FAILED, f"b ({ids['b']}) cancelled"),
    )
    assert await backend.cancel([ids["b"]], now=clock.time()) == [CancelResult.ALREADY_TERMINAL]
    # d's policy (RUN) counts b's end as an arrival: b was its only parent.
    deliveries = await claim(backend, clock)
    assert sorted(d.task_id for d in deliveries) == sorted([ids["a"], ids["d"]])
    # a's end reaches a cancelled child: nothing changes.
    [d_a] = [d for d in deliveries if d.task_id == ids["a"]]
    await backend.complete([done(d_a, clock)], now=clock.time())
    assert await status_of(backend, clock, ids["b"]) is TaskStatus.CANCELLED
    [stats] = await backend.stats(["default"], now=clock.time())
    assert stats.waiting == 0


async def test_cancel_a_queued_parent_cascades(backend: Broker, clock: FakeClock) -> None:
    graph = Graph(backend)
    graph.node("a")
    graph.node("b", after=["a"], after_failure=FailurePolicy.SKIP)
    ids = await graph.submit(clock)
    await backend.cancel([ids["a"]], now=clock.time())
    b = await record_of(backend, clock, ids["b"])
    assert (b.status, b.error) == (
        TaskStatus.CANCELLED,
        ErrorInfo(SKIPPED, f"a ({ids['a']}) cancelled"),
    )


async def test_purge_drops_waiting_tasks_and_reaches_children_elsewhere(
    backend: Broker, clock: FakeClock
) -> None:
    """Every waiting task of the purged queue is purged itself (none is counted as ended by its
    parent's purge first); children in other queues follow their policy."""
    graph = Graph(backend)
    graph.node("a")
    graph.node("b", after=["a"])
    graph.node("c", after=["b"])
    graph.node("elsewhere", after=["b"], queue="other")
    graph.node("runs", after=["b"], queue="other", after_failure=FailurePolicy.RUN)
    ids = await graph.submit(clock)
    assert await backend.purge("default", now=clock.time()) == 3
    for name in ("a", "b", "c"):
        record = await record_of(backend, clock, ids[name])
        assert record.status is TaskStatus.CANCELLED
        assert record.error is not None and record.error.type == "Purged"
    b = await record_of(backend, clock, ids["b"])
    elsewhere = await record_of(backend, clock, ids["elsewhere"])
    assert (elsewhere.status, elsewhere.error) == (
        TaskStatus.FAILED,
        ErrorInfo(UPSTREAM_FAILED, upstream_message(b)),
    )
    assert upstream_message(b).startswith(f"b ({ids['b']}) cancelled: Purged: ")
    [delivery] = await claim(backend, clock, ("other",))
    assert delivery.task_id == ids["runs"]
    [stats] = await backend.stats(["default"], now=clock.time())
    assert (stats.waiting, stats.queued) == (0, 0)


# -- WAIT outcomes and joins (fan-out) --------------------------------------------------------


class FanOut:
    """A task `parent` of a flow (with a child `after`) that fans out into shards and a join."""

    def __init__(self, backend: Broker, clock: FakeClock) -> None:
        self.backend = backend
        self.clock = clock

    async def start(self, *, shards: int = 2, policy: FailurePolicy = FailurePolicy.FAIL) -> None:
        graph = Graph(self.backend)
        self.parent = graph.node("split")
        self.after = graph.node("after", after=["split"])
        await graph.submit(self.clock)
        [self.delivery] = await claim(self.backend, self.clock)
        assert self.delivery.task_id == self.parent
        self.shards = [self.backend.new_task_id("shards") for _ in range(shards)]
        self.join = self.backend.new_task_id("default")
        messages = [
            message(
                self.backend,
                "shards",
                id=shard,
                flow_id=FLOW,
                node=f"split.shard[{i}]",
                children=[(self.join, "default")],
            )
            for i, shard in enumerate(self.shards)
        ]
        messages.append(
            message(
                self.backend,
                id=self.join,
                flow_id=FLOW,
                node="split.join",
                waits_for=self.shards,
                after_failure=policy,
                outcome_to=self.parent,
                inputs={"results": self.shards},
            )
        )
        results = await self.backend.enqueue(messages, now=self.clock.time())
        assert all(r.created for r in results)

    async def report_wait(self) -> bool:
        [accepted] = await self.backend.complete(
            [wait_outcome(self.delivery)], now=self.clock.time()
        )
        return accepted

    async def run_shards(self) -> None:
        deliveries = await claim(self.backend, self.clock, ("shards",), limit=len(self.shards))
        assert [d.task_id for d in deliveries] == self.shards
        outcomes = [done(d, self.clock, i) for i, d in enumerate(deliveries)]
        assert all(await self.backend.complete(outcomes, now=self.clock.time()))

    async def run_join(self, value: Any = "joined") -> None:
        await run_one(self.backend, self.clock, self.join, value=value)


async def test_a_wait_outcome_makes_the_task_wait_for_its_join(
    backend: Broker, clock: FakeClock
) -> None:
    fan = FanOut(backend, clock)
    await fan.start()
    assert await fan.report_wait()
    parent = await record_of(backend, clock, fan.parent)
    assert (parent.status, parent.attempts, parent.worker_id) == (TaskStatus.WAITING, 1, None)
    join = await record_of(backend, clock, fan.join)
    assert (join.status, join.outcome_to, join.waits_for) == (
        TaskStatus.WAITING,
        fan.parent,
        fan.shards,
    )
    lease = Lease(fan.parent, fan.delivery.token)
    assert await backend.extend([lease], lease_s=10, now=clock.time()) == [LeaseState.LOST]
    assert await backend.complete([done(fan.delivery, clock)], now=clock.time()) == [False]
    [stats] = await backend.stats(["default"], now=clock.time())
    assert (stats.waiting, stats.running, stats.queued) == (3, 0, 0)  # parent, join, after
    [event] = [e for e in await events_of(backend, fan.parent) if e.kind is EventKind.WAITING]
    assert (event.detail, event.attempt, event.flow_id) == (fan.join, 1, FLOW)
    assert await claim(backend, clock) == []


async def test_the_join_ends_the_task_that_fanned_out(backend: Broker, clock: FakeClock) -> None:
    fan = FanOut(backend, clock)
    await fan.start(shards=3)
    assert await fan.report_wait()
    await fan.run_shards()
    got: list[TaskOutcome] = []

    async def waiter() -> None:
        got.append(await backend.storage.wait(fan.parent, timeout=None, now=clock.time()))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            await fan.run_join([0, 1, 2])
    parent = await record_of(backend, clock, fan.parent)
    assert parent.status is TaskStatus.DONE and parent.result == encode_value([0, 1, 2])
    assert parent.finished_at == clock.time() and parent.attempts == 1
    assert [o.status for o in got] == [TaskStatus.DONE]
    [event] = [e for e in await events_of(backend, fan.parent) if e.kind is EventKind.DONE]
    assert event.detail == f"outcome of {fan.join}"
    # The flow goes on: the fanning task's child is ready.
    [delivery] = await claim(backend, clock)
    assert delivery.task_id == fan.after


async def test_a_join_that_ends_before_the_wait_outcome_arrives(
    backend: Broker, clock: FakeClock
) -> None:
    """The shards and the join run before the fanning run reports: the join's outcome ends the
    running task (its lease void), and the run's WAIT is refused."""
    fan = FanOut(backend, clock)
    await fan.start()
    await fan.run_shards()
    await fan.run_join("early")
    parent = await record_of(backend, clock, fan.parent)
    assert (parent.status, parent.result) == (TaskStatus.DONE, encode_value("early"))
    lease = Lease(fan.parent, fan.delivery.token)
    assert await backend.extend([lease], lease_s=10, now=clock.time()) == [LeaseState.LOST]
    assert not await fan.report_wait()
    assert await status_of(backend, clock, fan.parent) is TaskStatus.DONE
    [delivery] = await claim(backend, clock)
    assert delivery.task_id == fan.after


async def test_a_failed_shard_fails_the_join_and_the_task_that_fanned_out(
    backend: Broker, clock: FakeClock
) -> None:
    fan = FanOut(backend, clock)
    await fan.start(shards=2)
    assert await fan.report_wait()
    d0, d1 = await claim(backend, clock, ("shards",))
    await backend.complete([failed(d0, clock, "KeyError")], now=clock.time())
    shard = await record_of(backend, clock, fan.shards[0])
    join = await record_of(backend, clock, fan.join)
    assert join.error == ErrorInfo(UPSTREAM_FAILED, upstream_message(shard))
    parent = await record_of(backend, clock, fan.parent)
    assert (parent.status, parent.error) == (TaskStatus.FAILED, join.error)
    [event] = [e for e in await events_of(backend, fan.parent) if e.kind is EventKind.FAILED]
    assert event.detail == f"outcome of {fan.join}"
    after = await record_of(backend, clock, fan.after)
    assert after.error == ErrorInfo(UPSTREAM_FAILED, upstream_message(parent))
    assert await backend.complete([done(d1, clock)], now=clock.time()) == [True]
    assert await status_of(backend, clock, fan.join) is TaskStatus.FAILED


async def test_a_partial_join_runs_after_a_failed_shard(backend: Broker, clock: FakeClock) -> None:
    fan = FanOut(backend, clock)
    await fan.start(shards=2, policy=FailurePolicy.RUN)
    assert await fan.report_wait()
    d0, d1 = await claim(backend, clock, ("shards",))
    await backend.complete([failed(d0, clock), done(d1, clock)], now=clock.time())
    await fan.run_join("partial")
    parent = await record_of(backend, clock, fan.parent)
    assert (parent.status, parent.result) == (TaskStatus.DONE, encode_value("partial"))


async def test_cancel_the_waiting_task_that_fanned_out_supersedes_its_join(
    backend: Broker, clock: FakeClock
) -> None:
    fan = FanOut(backend, clock)
    await fan.start()
    assert await fan.report_wait()
    assert await backend.cancel([fan.parent], now=clock.time()) == [CancelResult.CANCELLED]
    join = await record_of(backend, clock, fan.join)
    assert join.status is TaskStatus.CANCELLED
    assert join.error is not None and join.error.type == SUPERSEDED
    assert fan.parent in join.error.message
    [event] = [e for e in await events_of(backend, fan.join) if e.kind is EventKind.CANCELLED]
    assert event.detail == f"lost to {fan.parent}"
    after = await record_of(backend, clock, fan.after)
    assert after.error == ErrorInfo(UPSTREAM_FAILED, f"split ({fan.parent}) cancelled")
    # The shards end later: nothing changes.
    await fan.run_shards()
    assert await status_of(backend, clock, fan.join) is TaskStatus.CANCELLED


async def test_a_wait_after_a_cancel_request_cancels_the_task(
    backend: Broker, clock: FakeClock
) -> None:
    fan = FanOut(backend, clock)
    await fan.start()
    assert await backend.cancel([fan.parent], now=clock.time()) == [CancelResult.REQUESTED]
    assert await fan.report_wait()
    parent = await record_of(backend, clock, fan.parent)
    assert parent.status is TaskStatus.CANCELLED and parent.finished_at == clock.time()
    join = await record_of(backend, clock, fan.join)
    assert join.status is TaskStatus.CANCELLED
    assert join.error is not None and join.error.type == SUPERSEDED


# -- hedged copies ----------------------------------------------------------------------------


class Hedge:
    """A running task `primary` of a flow (with a child) and a copy of it, enqueued later."""

    def __init__(self, backend: Broker, clock: FakeClock) -> None:
        self.backend = backend
        self.clock = clock

    async def start(self) -> None:
        graph = Graph(self.backend)
        self.primary = graph.node("slow")
        self.child = graph.node("next", after=["slow"])
        await graph.submit(self.clock)
        self.d_primary = await claim_one(self.backend, self.clock, self.primary, worker="w1")
        assert await status_of(self.backend, self.clock, self.child) is TaskStatus.WAITING
        self.copy = self.backend.new_task_id("default")
        [result] = await self.backend.enqueue([self.copy_message()], now=self.clock.time())
        assert result.created

    def copy_message(self) -> TaskMessage:
        return message(
            self.backend,
            id=self.copy,
            flow_id=FLOW,
            node="slow",
            outcome_to=self.primary,
            copy=True,
        )

    async def claim_copy(self) -> Delivery:
        return await claim_one(self.backend, self.clock, self.copy, worker="w2")


async def test_a_copy_emits_hedged_on_its_primary(backend: Broker, clock: FakeClock) -> None:
    hedge = Hedge(backend, clock)
    await hedge.start()
    [event] = [e for e in await events_of(backend, hedge.primary) if e.kind is EventKind.HEDGED]
    assert (event.detail, event.flow_id, event.attempt) == (hedge.copy, FLOW, 1)
    copy = await record_of(backend, clock, hedge.copy)
    assert (copy.status, copy.copy, copy.outcome_to, copy.flow_id) == (
        TaskStatus.QUEUED,
        True,
        hedge.primary,
        FLOW,
    )
    assert await kinds_of(backend, hedge.copy) == [EventKind.QUEUED]


async def test_the_copy_wins(backend: Broker, clock: FakeClock) -> None:
    hedge = Hedge(backend, clock)
    await hedge.start()
    d_copy = await hedge.claim_copy()
    await clock.advance(1)
    assert await backend.complete([done(d_copy, clock, "fast")], now=clock.time()) == [True]

    primary = await record_of(backend, clock, hedge.primary)
    assert (primary.status, primary.result) == (TaskStatus.DONE, encode_value("fast"))
    assert primary.finished_at == clock.time()
    [event] = [e for e in await events_of(backend, hedge.primary) if e.kind is EventKind.DONE]
    assert event.detail == f"won by copy {hedge.copy}"
    # The primary's run lost: its lease is void and its outcome refused.
    lease = Lease(hedge.primary, hedge.d_primary.token)
    assert await backend.extend([lease], lease_s=10, now=clock.time()) == [LeaseState.LOST]
    late = done(hedge.d_primary, clock, "slow")
    assert await backend.complete([late], now=clock.time()) == [False]
    assert (await record_of(backend, clock, hedge.primary)).result == encode_value("fast")
    # The primary's children go on.
    [delivery] = await claim(backend, clock)
    assert delivery.task_id == hedge.child


async def test_the_primary_wins_over_a_queued_copy(backend: Broker, clock: FakeClock) -> None:
    hedge = Hedge(backend, clock)
    await hedge.start()
    await backend.complete([done(hedge.d_primary, clock, "first")], now=clock.time())
    copy = await record_of(backend, clock, hedge.copy)
    assert copy.status is TaskStatus.CANCELLED and copy.finished_at == clock.time()
    assert copy.error is not None and copy.error.type == SUPERSEDED
    assert hedge.primary in copy.error.message
    [event] = [e for e in await events_of(backend, hedge.copy) if e.kind is EventKind.CANCELLED]
    assert event.detail == f"lost to {hedge.primary}"
    assert (await record_of(backend, clock, hedge.primary)).result == encode_value("first")
    [delivery] = await claim(backend, clock)
    assert delivery.task_id == hedge.child  # the copy is not claimable


async def test_the_primary_wins_over_a_running_copy(backend: Broker, clock: FakeClock) -> None:
    hedge = Hedge(backend, clock)
    await hedge.start()
    d_copy = await hedge.claim_copy()
    await backend.complete([done(hedge.d_primary, clock, "first")], now=clock.time())
    lease = Lease(hedge.copy, d_copy.token)
    assert await backend.extend([lease], lease_s=10, now=clock.time()) == [LeaseState.CANCEL]
    copy = await record_of(backend, clock, hedge.copy)
    assert copy.status is TaskStatus.RUNNING and copy.cancel_requested
    assert EventKind.CANCEL_REQUESTED in await kinds_of(backend, hedge.copy)
    stop = outcome(d_copy, OutcomeKind.CANCELLED, clock)
    assert await backend.complete([stop], now=clock.time()) == [True]
    primary = await record_of(backend, clock, hedge.primary)
    assert (primary.status, primary.result) == (TaskStatus.DONE, encode_value("first"))


async def test_both_outcomes_in_one_call_the_first_wins(backend: Broker, clock: FakeClock) -> None:
    hedge = Hedge(backend, clock)
    await hedge.start()
    d_copy = await hedge.claim_copy()
    accepted = await backend.complete(
        [done(d_copy, clock, "copy"), done(hedge.d_primary, clock, "primary")], now=clock.time()
    )
    assert accepted == [True, False]
    primary = await record_of(backend, clock, hedge.primary)
    assert primary.result == encode_value("copy")
    # The copy ended first, so nothing is left to cancel; the copy's record is its own.
    copy = await record_of(backend, clock, hedge.copy)
    assert (copy.status, copy.result) == (TaskStatus.DONE, encode_value("copy"))


async def test_a_copy_that_fails_ends_its_primary_failed(backend: Broker, clock: FakeClock) -> None:
    """The first outcome wins, whatever it is: the copy's failure is the primary's."""
    hedge = Hedge(backend, clock)
    await hedge.start()
    d_copy = await hedge.claim_copy()
    await backend.complete([failed(d_copy, clock, "KeyError")], now=clock.time())
    primary = await record_of(backend, clock, hedge.primary)
    copy = await record_of(backend, clock, hedge.copy)
    assert (primary.status, primary.error) == (TaskStatus.FAILED, copy.error)
    child = await record_of(backend, clock, hedge.child)
    assert child.error == ErrorInfo(UPSTREAM_FAILED, upstream_message(primary))


@pytest.mark.parametrize("ending", ["cancel", "purge", "lapse"])
async def test_a_copy_ended_by_the_backend_leaves_its_primary_running(
    backend: Broker, clock: FakeClock, ending: str
) -> None:
    """Only an outcome its own run reports (DONE or FAILED) of a copy reaches its primary: a
    copy cancelled, purged, or whose last lease lapsed (its worker died) ends alone."""
    hedge = Hedge(backend, clock)
    await hedge.start()
    if ending == "cancel":
        await backend.cancel([hedge.copy], now=clock.time())
    elif ending == "purge":
        assert await backend.purge("default", now=clock.time()) == 2  # and the waiting child
    else:
        await claim_one(backend, clock, hedge.copy, worker="w2")
        await backend.extend(
            [Lease(hedge.primary, hedge.d_primary.token)], lease_s=100, now=clock.time()
        )
        await clock.advance(LEASE_S + 1)
        assert await claim(backend, clock) == []  # settles the copy's lapse: dead-lettered
    copy = await record_of(backend, clock, hedge.copy)
    assert copy.status in (TaskStatus.CANCELLED, TaskStatus.FAILED)
    assert await status_of(backend, clock, hedge.primary) is TaskStatus.RUNNING
    assert await backend.complete([done(hedge.d_primary, clock, "slow")], now=clock.time()) == [
        True
    ]
    primary = await record_of(backend, clock, hedge.primary)
    assert primary.result == encode_value("slow")


async def test_a_cancelled_join_ends_the_task_that_fanned_out(
    backend: Broker, clock: FakeClock
) -> None:
    """A join passes on any end, even one the backend decided."""
    fan = FanOut(backend, clock)
    await fan.start()
    assert await fan.report_wait()
    assert await backend.cancel([fan.join], now=clock.time()) == [CancelResult.CANCELLED]
    parent = await record_of(backend, clock, fan.parent)
    assert parent.status is TaskStatus.CANCELLED
    [event] = [e for e in await events_of(backend, fan.parent) if e.kind is EventKind.CANCELLED]
    assert event.detail == f"outcome of {fan.join}"


async def test_a_copy_enqueued_after_its_primary_ended_is_superseded_at_once(
    backend: Broker, clock: FakeClock
) -> None:
    primary = await enqueue_one(backend, clock, flow_id=FLOW)
    [delivery] = await claim(backend, clock)
    await backend.complete([done(delivery, clock)], now=clock.time())
    copy = message(backend, flow_id=FLOW, outcome_to=primary, copy=True)
    [result] = await backend.enqueue([copy], now=clock.time())
    assert result.created
    record = await record_of(backend, clock, copy.id)
    assert record.status is TaskStatus.CANCELLED
    assert record.error is not None and record.error.type == SUPERSEDED
    assert await claim(backend, clock) == []


async def test_enqueueing_a_copy_again_changes_nothing(backend: Broker, clock: FakeClock) -> None:
    """A worker that repeats its hedge (after a crash) sends the same derived id: one copy."""
    hedge = Hedge(backend, clock)
    await hedge.start()
    [result] = await backend.enqueue([hedge.copy_message()], now=clock.time())
    assert (result.task_id, result.created) == (hedge.copy, False)
    hedged = [e for e in await events_of(backend, hedge.primary) if e.kind is EventKind.HEDGED]
    assert len(hedged) == 1


# -- flow_tasks, records and events -----------------------------------------------------------


async def test_flow_tasks_lists_a_flows_tasks_oldest_first(
    backend: Broker, clock: FakeClock
) -> None:
    graph = Graph(backend)
    graph.node("a")
    graph.node("b", after=["a"], queue="other")
    ids = await graph.submit(clock)
    other_flow = Graph(backend, flow_id="flow-2")
    other_flow.node("x")
    await other_flow.submit(clock)
    await enqueue_one(backend, clock)  # no flow
    # Made earlier (an older created_at) though its id is newer: it comes first.
    early = await enqueue_one(
        backend, clock, "third", flow_id=FLOW, node="early", created_at=clock.time() - 10
    )

    records = await backend.storage.flow_tasks(FLOW, now=clock.time())
    assert [r.id for r in records] == [early, *sorted([ids["a"], ids["b"]])]
    assert [(r.node, r.flow_id) for r in records if r.id == ids["b"]] == [("b", FLOW)]
    by_id = {r.id: r for r in records}
    assert by_id[ids["b"]].waits_for == [ids["a"]]
    assert by_id[ids["b"]].status is TaskStatus.WAITING
    assert [r.node for r in await backend.storage.flow_tasks("flow-2", now=clock.time())] == ["x"]
    assert await backend.storage.flow_tasks("no-such-flow", now=clock.time()) == []


async def test_flow_tasks_forgets_cleaned_up_tasks(backend: Broker, clock: FakeClock) -> None:
    graph = Graph(backend)
    graph.node("a")
    graph.node("b", after=["a"])
    ids = await graph.submit(clock)
    await run_one(backend, clock, ids["a"])
    await clock.advance(TTL_S + 1)
    assert await backend.storage.cleanup(now=clock.time(), keep_s=0) == 1
    records = await backend.storage.flow_tasks(FLOW, now=clock.time())
    assert [(r.id, r.status) for r in records] == [(ids["b"], TaskStatus.QUEUED)]


async def test_every_event_of_a_flow_task_carries_its_flow_id(
    backend: Broker, clock: FakeClock
) -> None:
    fan = FanOut(backend, clock)
    await fan.start()
    assert await fan.report_wait()
    await fan.run_shards()
    await fan.run_join()
    [delivery] = await claim(backend, clock)
    await backend.complete([failed(delivery, clock)], now=clock.time())
    plain = await enqueue_one(backend, clock)
    events = await backend.storage.read_events("default") + await backend.storage.read_events(
        "shards"
    )
    assert {e.flow_id for e in events if e.task_id != plain} == {FLOW}
    assert [e.flow_id for e in events if e.task_id == plain] == [None]
    assert {EventKind.WAITING, EventKind.QUEUED, EventKind.RUNNING, EventKind.DONE} <= {
        e.kind for e in events
    }


async def test_the_events_of_a_fan_out_in_order(backend: Broker, clock: FakeClock) -> None:
    fan = FanOut(backend, clock)
    await fan.start(shards=1)
    assert await fan.report_wait()
    await fan.run_shards()
    await fan.run_join()
    parent = await events_of(backend, fan.parent)
    assert [(e.kind, e.detail) for e in parent] == [
        (EventKind.QUEUED, None),
        (EventKind.RUNNING, None),
        (EventKind.WAITING, fan.join),
        (EventKind.DONE, f"outcome of {fan.join}"),
    ]
    join = await events_of(backend, fan.join)
    assert [(e.kind, e.detail) for e in join] == [
        (EventKind.WAITING, None),
        (EventKind.QUEUED, "ready"),
        (EventKind.RUNNING, None),
        (EventKind.DONE, None),
    ]
    after = await events_of(backend, fan.after)
    assert [(e.kind, e.detail) for e in after] == [
        (EventKind.WAITING, None),
        (EventKind.QUEUED, "ready"),
    ]


async def test_a_flow_enqueued_twice_is_stored_once(backend: Broker, clock: FakeClock) -> None:
    """A submit repeated with the same ids (a retried call) adds nothing and keeps the
    children's count of arrived parents."""
    graph = Graph(backend)
    graph.node("a")
    graph.node("b")
    graph.node("c", after=["a", "b"])
    ids = await graph.submit(clock)
    d_a, d_b = await claim(backend, clock)
    await backend.complete([done(d_a, clock)], now=clock.time())
    results = await backend.enqueue(graph.messages(), now=clock.time())
    assert [r.created for r in results] == [False, False, False]
    assert await status_of(backend, clock, ids["c"]) is TaskStatus.WAITING
    await backend.complete([done(d_b, clock)], now=clock.time())
    assert await status_of(backend, clock, ids["c"]) is TaskStatus.QUEUED
