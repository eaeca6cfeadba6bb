"""Conformance: enqueue, claim and complete; ordering, queues, scheduling, dedup and stats."""

from __future__ import annotations

import anyio

from taskflow import QueueTasks, TaskContext
from taskflow.abc import (
    Broker,
    EventKind,
    Outcome,
    OutcomeKind,
    TaskStatus,
    decode_message,
    decode_value,
)
from taskflow.testing import FakeClock

from ._helpers import LEASE_S, TTL_S, claim, done, enqueue_one, failed, message, release


async def test_round_trip_records_every_step(backend: Broker, clock: FakeClock) -> None:
    msg = message(backend, retries=2, parent_id="p1", order_id="o1", created_at=clock.time())
    [result] = await backend.enqueue([msg], now=clock.time())
    assert result.task_id == msg.id and result.created

    record = await backend.storage.get(msg.id, now=clock.time())
    assert record is not None
    assert (record.status, record.attempts, record.retries) == (TaskStatus.QUEUED, 0, 2)
    assert record.payload == msg.payload  # the arguments as sent
    assert (record.name, record.queue, record.parent_id, record.order_id) == (
        "tests.task",
        "default",
        "p1",
        "o1",
    )

    await clock.advance(1)
    [delivery] = await claim(backend, clock, worker_id="w-7")
    assert delivery.task_id == msg.id and delivery.attempt == 1
    assert delivery.lease_expires_at == clock.time() + LEASE_S
    assert decode_message(delivery.data) == msg
    running = await backend.storage.get(msg.id, now=clock.time())
    assert running is not None
    assert running.status is TaskStatus.RUNNING and running.attempts == 1
    assert running.started_at == clock.time() and running.worker_id == "w-7"
    assert running.token == delivery.token

    await clock.advance(1)
    assert await backend.complete([done(delivery, clock, 42)], now=clock.time()) == [True]
    final = await backend.storage.get(msg.id, now=clock.time())
    assert final is not None
    assert final.status is TaskStatus.DONE and final.finished_at == clock.time()
    assert final.result is not None and decode_value(final.result) == 42
    assert final.result_expires_at == clock.time() + TTL_S and not final.result_expired
    assert await claim(backend, clock) == []


async def test_headers_travel_with_the_message_through_every_step(
    backend: Broker, clock: FakeClock
) -> None:
    """Headers (a trace context, the idempotency key) arrive with the first claim, again after
    a release, and on the task a dead letter is requeued as."""
    headers = {"traceparent": "00-abc-01", "idempotency_key": "charge-42", "tenant": "ü"}
    task_id = await enqueue_one(backend, clock, headers=headers)
    [first] = await claim(backend, clock)
    assert decode_message(first.data).headers == headers
    await backend.complete([release(first)], now=clock.time())
    [again] = await claim(backend, clock)
    assert decode_message(again.data).headers == headers
    await backend.complete([failed(again, clock)], now=clock.time())
    [new_id] = await backend.requeue_dead([task_id], now=clock.time(), new_ids=["requeued-h"])
    [requeued] = await claim(backend, clock)
    assert requeued.task_id == new_id
    assert decode_message(requeued.data).headers == headers


async def test_a_task_reads_the_headers_it_was_sent_with(backend: Broker, clock: FakeClock) -> None:
    """End to end through a worker on this backend: `ctx.headers` is what the producer sent."""
    app = QueueTasks("headers", broker=backend, clock=clock)

    @app.task
    async def traced(ctx: TaskContext) -> dict[str, str]:
        return dict(ctx.headers)

    with anyio.fail_after(10):
        async with app.running():
            for headers in ({"traceparent": "00-abc-01"}, {}):
                handle = await traced.options(headers=headers).add_task()
                assert await handle.result(timeout=5) == headers


async def test_unknown_id_has_no_record(backend: Broker, clock: FakeClock) -> None:
    assert await backend.storage.get("no-such-task", now=clock.time()) is None


async def test_get_many_keeps_order(backend: Broker, clock: FakeClock) -> None:
    first = await enqueue_one(backend, clock)
    second = await enqueue_one(backend, clock)
    records = await backend.storage.get_many([second, "missing", first], now=clock.time())
    assert [r.id if r else None for r in records] == [second, None, first]


async def test_batch_results_and_claims_keep_order(backend: Broker, clock: FakeClock) -> None:
    messages = [message(backend) for _ in range(20)]
    results = await backend.enqueue(messages, now=clock.time())
    assert [r.task_id for r in results] == [m.id for m in messages]
    assert all(r.created for r in results)
    deliveries = await claim(backend, clock, limit=7)
    deliveries += await claim(backend, clock, limit=100)
    assert [d.task_id for d in deliveries] == [m.id for m in messages]
    accepted = await backend.complete([done(d, clock) for d in deliveries], now=clock.time())
    assert accepted == [True] * 20


async def test_higher_priority_first_then_fifo(backend: Broker, clock: FakeClock) -> None:
    low1 = await enqueue_one(backend, clock, priority=0)
    high1 = await enqueue_one(backend, clock, priority=5)
    await clock.advance(1)
    low2 = await enqueue_one(backend, clock, priority=0)
    high2 = await enqueue_one(backend, clock, priority=5)
    negative = await enqueue_one(backend, clock, priority=-3)
    mid = await enqueue_one(backend, clock, priority=1)
    order = [d.task_id for d in await claim(backend, clock)]
    assert order == [high1, high2, mid, low1, low2, negative]


async def test_fifo_by_due_time_before_enqueue_order(backend: Broker, clock: FakeClock) -> None:
    start = clock.time()
    late = await enqueue_one(backend, clock, eta=start + 20)
    early = await enqueue_one(backend, clock, eta=start + 10)
    await clock.advance(5)
    plain = await enqueue_one(backend, clock)
    await clock.advance(30)
    order = [d.task_id for d in await claim(backend, clock)]
    assert order == [plain, early, late]


async def test_queues_are_taken_in_the_given_order(backend: Broker, clock: FakeClock) -> None:
    a1 = await enqueue_one(backend, clock, "a")
    b1 = await enqueue_one(backend, clock, "b", priority=9)
    a2 = await enqueue_one(backend, clock, "a")
    c1 = await enqueue_one(backend, clock, "c")
    assert [d.task_id for d in await claim(backend, clock, ("b", "a"), limit=2)] == [b1, a1]
    assert [d.task_id for d in await claim(backend, clock, ("a", "b"), limit=5)] == [a2]
    assert [d.task_id for d in await claim(backend, clock, ("c",))] == [c1]


async def test_claim_from_unknown_or_empty_queue(backend: Broker, clock: FakeClock) -> None:
    assert await claim(backend, clock, ("nothing-here",)) == []
    assert await claim(backend, clock, ()) == []


async def test_scheduled_task_waits_for_its_eta(backend: Broker, clock: FakeClock) -> None:
    eta = clock.time() + 60
    task_id = await enqueue_one(backend, clock, eta=eta)
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.status is TaskStatus.SCHEDULED and record.eta == eta
    assert await claim(backend, clock) == []
    await clock.advance(59.5)
    assert await claim(backend, clock) == []
    await clock.advance(0.5)
    [delivery] = await claim(backend, clock)
    assert delivery.task_id == task_id and delivery.attempt == 1


async def test_eta_in_the_past_is_queued(backend: Broker, clock: FakeClock) -> None:
    task_id = await enqueue_one(backend, clock, eta=clock.time() - 5)
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.status is TaskStatus.QUEUED
    assert [d.task_id for d in await claim(backend, clock)] == [task_id]


async def test_next_due(backend: Broker, clock: FakeClock) -> None:
    t0 = clock.time()
    assert await backend.next_due(["default"], now=t0) is None
    await enqueue_one(backend, clock, eta=t0 + 50)
    await enqueue_one(backend, clock, "other", eta=t0 + 20)
    assert await backend.next_due(["default"], now=t0) == t0 + 50
    assert await backend.next_due(["default", "other"], now=t0) == t0 + 20
    await clock.advance(20)
    [delivery] = await claim(backend, clock, ("other",), lease_s=100)
    # The only thing pending in "other" now is the running task's lease lapsing.
    assert await backend.next_due(["other"], now=clock.time()) == delivery.lease_expires_at
    await backend.complete([done(delivery, clock)], now=clock.time())
    assert await backend.next_due(["other"], now=clock.time()) is None
    due_now = await backend.next_due(["default"], now=clock.time())
    assert due_now == t0 + 50
    await enqueue_one(backend, clock)
    ready = await backend.next_due(["default"], now=clock.time())
    assert ready is not None and ready <= clock.time()


async def test_dedup_against_a_live_task(backend: Broker, clock: FakeClock) -> None:
    first = message(backend, dedup_key="k")
    second = message(backend, dedup_key="k")
    r1, r2 = await backend.enqueue([first, second], now=clock.time())
    assert (r1.task_id, r1.created) == (first.id, True)
    assert (r2.task_id, r2.created) == (first.id, False)
    assert await backend.storage.get(second.id, now=clock.time()) is None
    [delivery] = await claim(backend, clock)
    [r3] = await backend.enqueue([message(backend, dedup_key="k")], now=clock.time())
    assert (r3.task_id, r3.created) == (first.id, False)  # running is still live
    await backend.complete([done(delivery, clock)], now=clock.time())
    assert len(await claim(backend, clock)) == 0


async def test_dedup_ends_with_the_task_without_ttl(backend: Broker, clock: FakeClock) -> None:
    first = await enqueue_one(backend, clock, dedup_key="k")
    [delivery] = await claim(backend, clock)
    await backend.complete([done(delivery, clock)], now=clock.time())
    again = message(backend, dedup_key="k")
    [result] = await backend.enqueue([again], now=clock.time())
    assert (result.task_id, result.created) == (again.id, True)
    assert result.task_id != first


async def test_dedup_ttl_after_the_end(backend: Broker, clock: FakeClock) -> None:
    first = await enqueue_one(backend, clock, dedup_key="k", dedup_ttl_s=60)
    [delivery] = await claim(backend, clock)
    await backend.complete([done(delivery, clock)], now=clock.time())
    await clock.advance(59)
    [r1] = await backend.enqueue([message(backend, dedup_key="k")], now=clock.time())
    assert (r1.task_id, r1.created) == (first, False)
    await clock.advance(1)
    again = message(backend, dedup_key="k")
    [r2] = await backend.enqueue([again], now=clock.time())
    assert (r2.task_id, r2.created) == (again.id, True)


async def test_dedup_after_cancel_without_ttl(backend: Broker, clock: FakeClock) -> None:
    first = await enqueue_one(backend, clock, dedup_key="k")
    await backend.cancel([first], now=clock.time())
    [result] = await backend.enqueue([message(backend, dedup_key="k")], now=clock.time())
    assert result.created and result.task_id != first


async def test_dedup_is_scoped_per_queue(backend: Broker, clock: FakeClock) -> None:
    in_a = message(backend, "a", dedup_key="k")
    in_b = message(backend, "b", dedup_key="k")
    results = await backend.enqueue([in_a, in_b], now=clock.time())
    assert [(r.task_id, r.created) for r in results] == [(in_a.id, True), (in_b.id, True)]


async def test_an_existing_id_dedups(backend: Broker, clock: FakeClock) -> None:
    msg = message(backend)
    r1, r2 = await backend.enqueue([msg, msg], now=clock.time())
    assert (r1.created, r2.created) == (True, False) and r2.task_id == msg.id
    [delivery] = await claim(backend, clock)
    await backend.complete([done(delivery, clock)], now=clock.time())
    [r3] = await backend.enqueue([msg], now=clock.time())
    assert (r3.task_id, r3.created) == (msg.id, False)
    record = await backend.storage.get(msg.id, now=clock.time())
    assert record is not None and record.status is TaskStatus.DONE
    assert await claim(backend, clock) == []


async def test_stats(backend: Broker, clock: FakeClock) -> None:
    t0 = clock.time()
    for _ in range(3):
        await enqueue_one(backend, clock)
    await enqueue_one(backend, clock, eta=t0 + 10)
    await enqueue_one(backend, clock, eta=t0 + 100)
    [stats] = await backend.stats(["default"], now=t0)
    assert (stats.queue, stats.queued, stats.scheduled, stats.running, stats.dead) == (
        "default",
        3,
        2,
        0,
        0,
    )
    a, b = await claim(backend, clock, limit=2)
    await backend.complete(
        [Outcome(a.task_id, a.token, OutcomeKind.FAILED, result_expires_at=t0 + TTL_S)],
        now=clock.time(),
    )
    await clock.advance(10)
    stats, empty = await backend.stats(["default", "unused"], now=clock.time())
    assert (stats.queued, stats.scheduled, stats.running, stats.dead) == (2, 1, 1, 1)
    assert (empty.queue, empty.queued, empty.scheduled, empty.running, empty.dead) == (
        "unused",
        0,
        0,
        0,
        0,
    )
    assert b.task_id


async def test_enqueue_emits_queued_and_scheduled_events(backend: Broker, clock: FakeClock) -> None:
    queued = await enqueue_one(backend, clock)
    scheduled = await enqueue_one(backend, clock, eta=clock.time() + 5)
    events = await backend.storage.read_events("default")
    assert [(e.task_id, e.kind) for e in events] == [
        (queued, EventKind.QUEUED),
        (scheduled, EventKind.SCHEDULED),
    ]
