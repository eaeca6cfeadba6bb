"""Memory-backend specifics that the conformance suite leaves open: URLs, shared storage, heap
compaction, the event cap setter, and how a lapsed lease behaves until it is re-delivered."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from taskflow import LifecycleError
from taskflow.abc import (
    CancelResult,
    ErrorInfo,
    Lease,
    LeaseState,
    Outcome,
    OutcomeKind,
    Progress,
    ProgressUpdate,
    ResultWaiters,
    TaskMessage,
    TaskRecord,
    TaskStatus,
    encode_value,
)
from taskflow.memory import MemoryBroker, MemoryStorage, from_url
from taskflow.testing import FakeClock

PAYLOAD = encode_value([[], {}])


def make(broker: MemoryBroker, queue: str = "q", **options: object) -> TaskMessage:
    return TaskMessage(
        id=broker.new_task_id(queue),
        name="t",
        queue=queue,
        payload=PAYLOAD,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
async def broker() -> MemoryBroker:
    async with MemoryBroker() as opened:
        yield opened  # type: ignore[misc]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_from_url_builds_a_fresh_backend_each_time() -> None:
    first = from_url("memory://")
    second = from_url("memory://shared-name")
    assert isinstance(first, MemoryBroker) and isinstance(second, MemoryBroker)
    assert first.storage is not second.storage
    assert from_url("memory://shared-name").storage is not second.storage


@pytest.mark.parametrize("url", ["redis://localhost", "postgresql://x/y", "memory", ""])
def test_from_url_rejects_other_schemes(url: str) -> None:
    with pytest.raises(ValueError, match="memory://"):
        from_url(url)


def test_storage_is_process_local() -> None:
    assert MemoryStorage.shared_across_processes is False
    assert MemoryStorage.scheme == "memory"


async def test_use_before_open_is_a_lifecycle_error(clock: FakeClock) -> None:
    broker = MemoryBroker()
    with pytest.raises(LifecycleError, match="not open"):
        await broker.enqueue([make(broker)], now=clock.time())


async def test_brokers_on_one_storage_share_queues(clock: FakeClock) -> None:
    storage = MemoryStorage()
    async with MemoryBroker(storage) as producer:
        consumer = MemoryBroker(storage)
        await consumer.open()
        msg = make(producer)
        await producer.enqueue([msg], now=clock.time())
        [delivery] = await consumer.claim(
            ["q"], limit=10, lease_s=30, now=clock.time(), worker_id="w"
        )
        assert delivery.task_id == msg.id


async def test_lease_heap_stays_small_under_load(broker: MemoryBroker, clock: FakeClock) -> None:
    for _ in range(50):
        messages = [make(broker) for _ in range(100)]
        await broker.enqueue(messages, now=clock.time())
        deliveries = await broker.claim(
            ["q"], limit=100, lease_s=3600, now=clock.time(), worker_id="w"
        )
        outcomes = [Outcome(d.task_id, d.token, OutcomeKind.DONE) for d in deliveries]
        assert all(await broker.complete(outcomes, now=clock.time()))
    # 5000 finished tasks, none of whose leases lapsed yet: stale entries were compacted away.
    assert len(broker.storage.queues["q"].leases) <= 1024 + 100


async def test_scheduled_heap_drops_cancelled_entries(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    for _ in range(30):
        messages = [make(broker, eta=clock.time() + 3600) for _ in range(100)]
        await broker.enqueue(messages, now=clock.time())
        await broker.cancel([m.id for m in messages], now=clock.time())
    assert len(broker.storage.queues["q"].scheduled) <= 2 * 1024


async def test_events_maxlen_recaps_existing_streams(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    await broker.enqueue([make(broker) for _ in range(20)], now=clock.time())
    broker.storage.events_maxlen = 3
    assert len(await broker.storage.read_events("q")) == 3
    with pytest.raises(ValueError, match="events_maxlen"):
        broker.storage.events_maxlen = 0


async def test_a_foreign_cursor_is_a_clear_error(broker: MemoryBroker, clock: FakeClock) -> None:
    await broker.enqueue([make(broker)], now=clock.time())
    with pytest.raises(ValueError, match="cursor"):
        await broker.storage.read_events("q", after="1700000000000-0")


async def test_requeue_dead_needs_one_new_id_per_task(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    with pytest.raises(ValueError, match="one new id per dead letter"):
        await broker.requeue_dead(["a", "b"], now=clock.time(), new_ids=["x"])


async def test_old_worker_can_take_back_a_lapsed_task_before_redelivery(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    first, second = make(broker, retries=1), make(broker, retries=1)
    await broker.enqueue([first, second], now=clock.time())
    d1, d2 = await broker.claim(["q"], limit=2, lease_s=10, now=clock.time(), worker_id="old")
    await clock.advance(11)
    # Both leases lapsed; this claim re-delivers one and leaves the other waiting for a claim.
    [redelivered] = await broker.claim(
        ["q"], limit=1, lease_s=10, now=clock.time(), worker_id="new"
    )
    assert redelivered.task_id == first.id and redelivered.token > d1.token
    [stats] = await broker.stats(["q"], now=clock.time())
    assert (stats.running, stats.queued) == (2, 0)
    # The old worker renews the waiting one in time: it keeps it, nobody else gets it.
    states = await broker.extend([Lease(second.id, d2.token)], lease_s=10, now=clock.time())
    assert states == [LeaseState.OK]
    assert await broker.claim(["q"], limit=5, lease_s=10, now=clock.time(), worker_id="new") == []
    assert await broker.complete(
        [Outcome(second.id, d2.token, OutcomeKind.DONE)], now=clock.time()
    ) == [True]


@pytest.mark.parametrize(
    "kind", [OutcomeKind.DONE, OutcomeKind.FAILED, OutcomeKind.CANCELLED, OutcomeKind.RETRY]
)
async def test_outcome_of_a_lapsed_task_before_redelivery_stops_the_redelivery(
    broker: MemoryBroker, clock: FakeClock, kind: OutcomeKind
) -> None:
    first, second = make(broker, retries=2), make(broker, retries=2)
    await broker.enqueue([first, second], now=clock.time())
    _, d2 = await broker.claim(["q"], limit=2, lease_s=10, now=clock.time(), worker_id="old")
    await clock.advance(11)
    [redelivered] = await broker.claim(
        ["q"], limit=1, lease_s=10, now=clock.time(), worker_id="new"
    )
    assert redelivered.task_id == first.id
    # `second` lapsed and waits for a claim; its old worker reports first.
    outcome = Outcome(second.id, d2.token, kind, retry_at=clock.time() + 100)
    assert await broker.complete([outcome], now=clock.time()) == [True]
    assert await broker.claim(["q"], limit=5, lease_s=10, now=clock.time(), worker_id="new") == []
    record = await broker.storage.get(second.id, now=clock.time())
    assert record is not None and record.status is not TaskStatus.RUNNING


async def test_cancel_requested_task_that_lapses_is_cancelled(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    msg = make(broker, retries=3)
    await broker.enqueue([msg], now=clock.time())
    await broker.claim(["q"], limit=1, lease_s=10, now=clock.time(), worker_id="w")
    assert await broker.cancel([msg.id], now=clock.time()) == [CancelResult.REQUESTED]
    await clock.advance(11)
    assert await broker.claim(["q"], limit=1, lease_s=10, now=clock.time(), worker_id="w") == []
    record = await broker.storage.get(msg.id, now=clock.time())
    assert record is not None and record.status is TaskStatus.CANCELLED


async def test_results_of_tasks_without_store_result_are_dropped(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    msg = make(broker, store_result=False)
    await broker.enqueue([msg], now=clock.time())
    [d] = await broker.claim(["q"], limit=1, lease_s=10, now=clock.time(), worker_id="w")
    outcome = Outcome(d.task_id, d.token, OutcomeKind.DONE, result=encode_value(1))
    await broker.complete([outcome], now=clock.time())
    record = await broker.storage.get(msg.id, now=clock.time())
    assert record is not None and record.status is TaskStatus.DONE and record.result is None


async def test_records_carry_every_field(broker: MemoryBroker, clock: FakeClock) -> None:
    """`_record` sets rarely used fields only when they differ from the default: check all."""
    msg = make(
        broker,
        priority=4,
        eta=clock.time() - 1,
        retries=2,
        created_at=clock.time() - 2,
        parent_id="parent",
        order_id="order",
        dedup_key="dedup",
        store_result=False,
    )
    await broker.enqueue([msg], now=clock.time())
    [d] = await broker.claim(["q"], limit=1, lease_s=10, now=clock.time(), worker_id="w")
    await broker.storage.report(
        [ProgressUpdate(msg.id, d.token, progress=Progress(1, 2), yields=[b"\x01"])],
        now=clock.time(),
    )
    await broker.cancel([msg.id], now=clock.time())
    error = ErrorInfo("Cancelled", "stop")
    outcome = Outcome(
        msg.id, d.token, OutcomeKind.CANCELLED, error=error, result_expires_at=clock.time() + 5
    )
    await broker.complete([outcome], now=clock.time())
    await clock.advance(5)
    record = await broker.storage.get(msg.id, now=clock.time())
    assert record == TaskRecord(
        id=msg.id,
        name="t",
        queue="q",
        status=TaskStatus.CANCELLED,
        priority=4,
        attempts=1,
        retries=2,
        created_at=clock.time() - 7,
        eta=clock.time() - 6,
        started_at=clock.time() - 5,
        finished_at=clock.time() - 5,
        result=None,
        error=error,
        progress=Progress(1, 2),
        yields=[b"\x01"],
        parent_id="parent",
        order_id="order",
        requeued_from=None,
        dedup_key="dedup",
        store_result=False,
        cancel_requested=True,
        result_expires_at=clock.time(),
        result_expired=True,
        token=d.token,
        worker_id="w",
        payload=msg.payload,
    )


async def test_close_cancels_pending_waits(clock: FakeClock) -> None:
    broker = MemoryBroker()
    await broker.open()
    task_id = (await broker.enqueue([make(broker)], now=clock.time()))[0].task_id
    outcomes: list[str] = []

    async def wait_result() -> None:
        try:
            await broker.storage.wait(task_id, timeout=None, now=clock.time())
        except asyncio.CancelledError:
            outcomes.append("result")
            raise

    async def follow() -> None:
        try:
            async for _ in broker.storage.follow_events("other"):
                pass
        except asyncio.CancelledError:
            outcomes.append("events")
            raise

    with anyio.fail_after(10):
        tasks = [asyncio.ensure_future(wait_result()), asyncio.ensure_future(follow())]
        await anyio.wait_all_tasks_blocked()
        await broker.close()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(outcomes) == ["events", "result"]


async def test_cleanup_forgets_dedup_keys_past_their_ttl(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    msg = make(broker, dedup_key="k", dedup_ttl_s=10)
    await broker.enqueue([msg], now=clock.time())
    [d] = await broker.claim(["q"], limit=1, lease_s=10, now=clock.time(), worker_id="w")
    outcome = Outcome(d.task_id, d.token, OutcomeKind.DONE, result_expires_at=clock.time() + 100)
    await broker.complete([outcome], now=clock.time())
    assert await broker.storage.cleanup(now=clock.time() + 9, keep_s=0) == 0
    assert ("q", "k") in broker.storage._dedup
    assert await broker.storage.cleanup(now=clock.time() + 10, keep_s=0) == 0
    assert ("q", "k") not in broker.storage._dedup
    assert await broker.storage.get(msg.id, now=clock.time()) is not None


async def test_a_lapsed_lease_dead_letter_is_logged(
    broker: MemoryBroker, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    msg = make(broker)
    await broker.enqueue([msg], now=clock.time())
    await broker.claim(["q"], limit=1, lease_s=10, now=clock.time(), worker_id="w-dead")
    await clock.advance(10)
    with caplog.at_level("INFO", logger="taskflow.memory"):
        await broker.claim(["q"], limit=1, lease_s=10, now=clock.time(), worker_id="w2")
    assert msg.id in caplog.text and "w-dead" in caplog.text and "LeaseExpired" in caplog.text


async def test_requeued_dead_letter_takes_its_dedup_key_only_if_no_live_task_holds_it(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    async def dead_letter(**options: object) -> str:
        msg = make(broker, dedup_key="k", **options)
        [result] = await broker.enqueue([msg], now=clock.time())
        assert result.created
        [d] = await broker.claim(["q"], limit=1, lease_s=10, now=clock.time(), worker_id="w")
        failed = Outcome(d.task_id, d.token, OutcomeKind.FAILED, error=ErrorInfo("E", "x"))
        await broker.complete([failed], now=clock.time())
        return msg.id

    # Dead within its dedup TTL: the requeued copy takes the key over.
    old = await dead_letter(dedup_ttl_s=600)
    [new] = await broker.requeue_dead([old], now=clock.time(), new_ids=["n1"])
    owner = broker.storage.dedup_owner("q", "k", clock.time())
    assert owner is not None and owner.id == new == "n1"
    await broker.cancel(["n1"], now=clock.time())
    await clock.advance(600)  # past the dedup TTL the copy inherited

    # A live task holds the key: it keeps it.
    old = await dead_letter()
    live = make(broker, dedup_key="k")
    await broker.enqueue([live], now=clock.time())
    await broker.requeue_dead([old], now=clock.time(), new_ids=["n2"])
    owner = broker.storage.dedup_owner("q", "k", clock.time())
    assert owner is not None and owner.id == live.id


async def test_watch_work_calls_back_on_enqueue_into_a_watched_queue(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    calls: list[str] = []
    broker.watch_work(["q"], worker_id="w1", callback=lambda: calls.append("q"))
    await broker.enqueue([make(broker, "other")], now=clock.time())
    assert calls == []
    await broker.enqueue([make(broker, "q")], now=clock.time())
    assert calls == ["q"]


async def test_a_wait_for_a_task_that_ended_needs_no_waiter(
    broker: MemoryBroker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most results are awaited after their task ended: the memory storage answers those from
    the task's state (`Storage._outcome_at_hand`) without registering a waiter."""
    msg = make(broker)
    await broker.enqueue([msg], now=clock.time())
    [d] = await broker.claim(["q"], limit=1, lease_s=10, now=clock.time(), worker_id="w")
    done = Outcome(d.task_id, d.token, OutcomeKind.DONE, result=encode_value(3))
    await broker.complete([done], now=clock.time())

    async def no_waiter(*args: object, **kwargs: object) -> None:
        raise AssertionError("a waiter was registered for a task that had ended")

    monkeypatch.setattr(ResultWaiters, "wait", no_waiter)
    outcome = await broker.storage.wait(msg.id, timeout=None, now=clock.time())
    assert outcome.status is TaskStatus.DONE and outcome.result == encode_value(3)
