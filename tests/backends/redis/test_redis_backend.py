"""Redis-specific behaviour the conformance suite cannot see: the subscribe-before-read race of
result waiting, reconnecting after the server drops our connections (or restarts), and hash-tag
routing of task ids on a Redis Cluster.

Tests that kill connections or restart a server use a private ``redis-server`` on a free port
(`tests.services.start_redis_server`), never the shared test server.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from taskflow import ConfigError, GlobalConfig, QueueTasks
from taskflow._ids import is_task_id, queue_code
from taskflow.abc import (
    CancelResult,
    Delivery,
    EventKind,
    Lease,
    LeaseState,
    Outcome,
    OutcomeKind,
    Progress,
    ProgressUpdate,
    TaskOutcome,
    TaskRecord,
    TaskStatus,
    decode_message,
    encode_value,
)
from taskflow.redis import RedisBroker, RedisStorage, from_url
from taskflow.redis._codec import complete_args, pack, unpack
from taskflow.redis._early import EarlyOutcomes
from taskflow.testing import FakeClock
from tests.conformance._helpers import LEASE_S, claim, done, enqueue_one, failed, message
from tests.plugins.backend_redis import delete_prefix, random_prefix, twin
from tests.services import free_port, redis_url, start_redis_server, stop_process

pytestmark = pytest.mark.redis


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def broker() -> AsyncIterator[RedisBroker]:
    """A broker on the shared test server under a private prefix."""
    async with from_url(redis_url(), prefix=random_prefix()) as b:
        try:
            yield b
        finally:
            await delete_prefix(b)


@pytest.fixture
def private_server() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own, free to kill connections on or restart."""
    redis_url()  # skip (or fail) with the usual reason if Redis is not installed/running
    port = free_port()
    proc = start_redis_server(port)
    try:
        yield port, proc
    finally:
        stop_process(proc)


async def _kill_clients(port: int, kind: str) -> int:
    """CLIENT KILL TYPE `kind` on the private server, from a connection of its own."""
    async with aioredis.Redis(port=port) as admin:
        killed: int = await admin.client_kill_filter(_type=kind, skipme=True)
        return killed


# -- subscribe before read ---------------------------------------------------------------------


async def test_completion_right_after_the_waiter_read_the_state_still_wakes_it(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """The waiter reads "running"; the task completes (from another process's broker) before
    the waiter starts waiting. The pub/sub subscription made before the read delivers it."""
    task_id = await enqueue_one(broker, clock)
    waiter_storage = broker.storage
    async with twin(broker) as other:
        [delivery] = await claim(other, clock)
        read_original = waiter_storage._get_outcomes
        completed: list[bool] = []

        async def read_then_complete(
            task_ids: Sequence[str], now: float
        ) -> list[TaskOutcome | None]:
            outcomes = await read_original(task_ids, now)
            if not completed:
                completed.append(True)
                assert outcomes[0] is not None and outcomes[0].status is TaskStatus.RUNNING
                assert await other.complete([done(delivery, clock, 42)], now=clock.time())
            return outcomes

        waiter_storage._get_outcomes = read_then_complete  # type: ignore[method-assign]
        with anyio.fail_after(10):
            outcome = await waiter_storage.wait(task_id, timeout=None, now=clock.time())
    assert completed == [True]
    assert outcome.status is TaskStatus.DONE and outcome.result == encode_value(42)


async def test_many_waiters_share_one_listener(broker: RedisBroker, clock: FakeClock) -> None:
    """300 waiters: one pub/sub connection, one inbox subscription for the queue, and the
    outcomes of one `complete` call reach them in one pushed message."""
    ids = [await enqueue_one(broker, clock) for _ in range(300)]
    deliveries: list[Delivery] = []
    while batch := await claim(broker, clock):
        deliveries += batch
    results: list[TaskOutcome] = []
    storage = broker.storage
    pushes: list[str] = []
    on_message = storage._on_message

    def counting(channel: str, data: bytes) -> None:
        if ":inbox:" in channel:
            pushes.append(channel)
        on_message(channel, data)

    storage._listener._on_message = counting  # type: ignore[union-attr]
    # Every waiter registers its inbox by its first read: complete only once all have read
    # (waiting until every task is blocked would count reads still in flight on the socket).
    read_now, reads, all_read = storage._read_now, [0], anyio.Event()

    async def counted_read(batch: Any, *, outcome: bool) -> Any:
        raws = await read_now(batch, outcome=outcome)
        reads[0] += len(batch)
        if reads[0] >= len(deliveries):
            all_read.set()
        return raws

    storage._read_now = counted_read  # type: ignore[method-assign]

    async def wait(task_id: str) -> None:
        results.append(await broker.storage.wait(task_id, timeout=None, now=clock.time()))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for task_id in ids:
                tg.start_soon(wait, task_id)
            await all_read.wait()
            listener = storage._listener
            assert listener is not None
            assert len(listener._nodes) == 1
            assert list(listener._confirmed) == [storage.inbox("default")]
            await broker.complete([done(d, clock) for d in deliveries], now=clock.time())
    assert sorted(r.id for r in results) == sorted(ids)
    assert all(r.status is TaskStatus.DONE and r.result == encode_value("ok") for r in results)
    assert pushes == [storage.inbox("default")]


@pytest.mark.parametrize("with_yields", [False, True])
async def test_pushed_outcome_is_the_stored_records(
    broker: RedisBroker, clock: FakeClock, with_yields: bool
) -> None:
    """What a waiter gets from a push equals the outcome part of what a read returns
    afterwards (a push carries the progress and yields reported while it ran, too)."""
    task_id = await enqueue_one(broker, clock)
    (delivery,) = await claim(broker, clock)
    if with_yields:
        update = ProgressUpdate(task_id, delivery.token, Progress(1, 2), [b"a", b"b"])
        assert await broker.storage.report([update], now=clock.time()) == [True]

    async def finish_later() -> None:
        await anyio.wait_all_tasks_blocked()
        await broker.complete([done(delivery, clock)], now=clock.time())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(finish_later)
            pushed = await broker.storage.wait(task_id, timeout=None, now=clock.time())
    stored = await broker.storage.get(task_id, now=clock.time())
    assert stored is not None and pushed == TaskOutcome.of(stored)
    assert stored.yields == ([b"a", b"b"] if with_yields else [])


@pytest.mark.parametrize("kind", ["done", "failed"])
async def test_an_outcome_waiter_takes_the_pushed_outcome_without_reading_again(
    broker: RedisBroker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Completed by another process: the waiter reads once (registering its inbox), then
    takes the pushed outcome, equal to the stored record's outcome."""
    task_id = await enqueue_one(broker, clock)
    (delivery,) = await claim(broker, clock)
    storage = broker.storage
    reads = _count_reads(broker, monkeypatch)
    ending = done(delivery, clock, 5) if kind == "done" else failed(delivery, clock)
    async with twin(broker) as other:

        async def finish_elsewhere() -> None:
            await anyio.wait_all_tasks_blocked()
            assert await other.complete([ending], now=clock.time()) == [True]

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(finish_elsewhere)
                pushed = await storage.wait(task_id, timeout=None, now=clock.time())
    assert reads == [True]
    stored = await storage.get(task_id, now=clock.time())
    assert stored is not None and pushed == TaskOutcome.of(stored)
    assert pushed.status is TaskStatus(kind)


# -- reconnecting ------------------------------------------------------------------------------


async def test_calls_succeed_again_after_client_kill(
    private_server: tuple[int, subprocess.Popen[bytes]], clock: FakeClock
) -> None:
    port, _ = private_server
    async with from_url(f"redis://127.0.0.1:{port}/0", prefix=random_prefix()) as b:
        first = await enqueue_one(b, clock)
        assert await _kill_clients(port, "normal") >= 1
        second = await enqueue_one(b, clock)
        deliveries = await claim(b, clock)
        assert {d.task_id for d in deliveries} == {first, second}
        assert await _kill_clients(port, "normal") >= 1
        assert await b.complete([done(d, clock) for d in deliveries], now=clock.time()) == [
            True,
            True,
        ]
        records = await b.storage.get_many([first, second], now=clock.time())
        assert [r.status for r in records if r is not None] == [TaskStatus.DONE] * 2


async def test_listener_resubscribes_after_its_connection_is_killed(
    private_server: tuple[int, subprocess.Popen[bytes]], clock: FakeClock
) -> None:
    """Kill the pub/sub connection, complete the task while it may still be down: the
    listener reconnects, resubscribes, re-reads what it waits for, and the waiter gets it."""
    port, _ = private_server
    url = f"redis://127.0.0.1:{port}/0"
    prefix = random_prefix()
    async with from_url(url, prefix=prefix) as waiter, from_url(url, prefix=prefix) as worker:
        task_id = await enqueue_one(waiter, clock)
        [delivery] = await claim(worker, clock)
        results: list[TaskOutcome] = []

        async def wait() -> None:
            results.append(await waiter.storage.wait(task_id, timeout=None, now=clock.time()))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                assert await _kill_clients(port, "pubsub") >= 1
                await worker.complete([done(delivery, clock, "late")], now=clock.time())
        [record] = results
        assert record.status is TaskStatus.DONE and record.result == encode_value("late")

        # And the resubscribed channel keeps delivering.
        second = await enqueue_one(waiter, clock)
        [delivery] = await claim(worker, clock)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: worker.complete([done(delivery, clock)], now=clock.time()))
                record = await waiter.storage.wait(second, timeout=None, now=clock.time())
        assert record.status is TaskStatus.DONE


async def test_carries_on_after_a_server_restart(clock: FakeClock) -> None:
    """A restarted (empty) server: scripts are loaded again on NOSCRIPT and calls succeed."""
    redis_url()
    port = free_port()
    proc = start_redis_server(port)
    try:
        async with from_url(f"redis://127.0.0.1:{port}/0", prefix=random_prefix()) as b:
            await enqueue_one(b, clock)
            stop_process(proc)
            proc = start_redis_server(port)
            task_id = await enqueue_one(b, clock)
            [delivery] = await claim(b, clock)
            assert delivery.task_id == task_id
            assert await b.complete([done(delivery, clock)], now=clock.time()) == [True]
    finally:
        stop_process(proc)


# -- ids, routing, validation ------------------------------------------------------------------


async def test_a_task_id_routes_to_its_queue_slot_from_any_process(
    redis_cluster_url: str, clock: FakeClock
) -> None:
    """A generated id carries no hash tag, yet a process that never saw the task (no cache)
    finds its record on a cluster: the id's code names the queue, whose keys share a slot."""
    async with from_url(redis_cluster_url, prefix=random_prefix()) as b:
        storage = b.storage
        queues = ("default", "emails", "q-ü")
        ids = []
        for queue in queues:
            task_id = await enqueue_one(b, clock, queue=queue)
            assert is_task_id(task_id) and task_id.endswith(queue_code(queue))
            queue_slot = key_slot(storage.qkey(queue, "ev").encode())
            assert key_slot(storage.qkey(queue, f"t:{task_id}").encode()) == queue_slot
            ids.append(task_id)
        async with twin(b) as other:
            records = await other.storage.get_many(ids, now=clock.time())
            assert [r.queue if r else None for r in records] == list(queues)
            assert await other.cancel(ids, now=clock.time()) == [CancelResult.CANCELLED] * 3
        await delete_prefix(b)


async def test_a_process_reads_a_queue_code_once(
    broker: RedisBroker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that never sent to a queue looks its code up once, not once per task: its
    claims, heartbeats and completions of that queue's tasks cost no extra round trip."""
    ids = [await enqueue_one(broker, clock) for _ in range(3)]
    async with twin(broker) as worker:
        client = worker.storage.client
        lookups: list[object] = []
        hmget = client.hmget

        async def counted(*args: object) -> object:
            lookups.append(args)
            return await hmget(*args)

        monkeypatch.setattr(client, "hmget", counted)
        for task_id in ids:
            [delivery] = await claim(worker, clock, limit=1)
            assert delivery.task_id == task_id
            lease = Lease(delivery.task_id, delivery.token)
            assert await worker.extend([lease], lease_s=LEASE_S, now=clock.time()) == [
                LeaseState.OK
            ]
            assert await worker.complete([done(delivery, clock)], now=clock.time()) == [True]
        assert len(lookups) == 1


async def test_the_owner_of_a_queue_code_is_checked_once_per_queue(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """Two queue names with one code could not be told apart by their ids: the second to be
    used is refused with a message naming both (forced here; 40-bit codes rarely collide)."""
    storage = broker.storage
    await storage.client.hset(f"{storage.prefix}codes", queue_code("emails"), "newsletters")
    with pytest.raises(ConfigError, match=r"'emails' cannot be used .* 'newsletters'"):
        await enqueue_one(broker, clock, queue="emails")
    await enqueue_one(broker, clock, queue="default")  # other queues are not affected


async def test_user_chosen_ids_work_on_a_cluster(redis_cluster_url: str, clock: FakeClock) -> None:
    async with from_url(redis_cluster_url, prefix=random_prefix()) as b:
        [result] = await b.enqueue([message(b, "emails", id="order-17")], now=clock.time())
        assert result.created and result.task_id == "order-17"
        # Another process (no local cache) finds the queue through the id index.
        async with twin(b) as other:
            record = await other.storage.get("order-17", now=clock.time())
            assert record is not None and record.queue == "emails"
            [delivery] = await claim(other, clock, ("emails",))
            assert await other.complete([done(delivery, clock, 1)], now=clock.time()) == [True]
            with anyio.fail_after(10):
                record = await b.storage.wait("order-17", timeout=5, now=clock.time())
            assert record.status is TaskStatus.DONE
        # The same id sent to another queue names the existing task, as any duplicate id does.
        [again] = await b.enqueue([message(b, "other", id="order-17")], now=clock.time())
        assert not again.created and again.task_id == "order-17"
        await delete_prefix(b)


async def test_ids_and_names_that_would_break_routing_are_refused(
    broker: RedisBroker, clock: FakeClock
) -> None:
    other_queues_id = broker.new_task_id("default")
    with pytest.raises(ConfigError, match="shape of the ids taskflow makes"):
        await broker.enqueue([message(broker, "emails", id=other_queues_id)], now=clock.time())
    with pytest.raises(ConfigError, match="contain no"):
        broker.new_task_id("a{b}")
    with pytest.raises(ConfigError, match="braces"):
        RedisStorage(prefix="x{y}")
    with pytest.raises(ConfigError, match="app name 'a:b' cannot be used"):
        RedisStorage(app="a:b")
    with pytest.raises(ConfigError, match="not a Redis URL"):
        from_url("http://localhost")


async def test_ids_chosen_by_users_may_hold_braces(broker: RedisBroker, clock: FakeClock) -> None:
    """Braces mean nothing in an id now: one that looks like an old hash tag is an id."""
    [result] = await broker.enqueue([message(broker, "emails", id="{default}x")], now=clock.time())
    assert result.created
    async with twin(broker) as other:
        record = await other.storage.get("{default}x", now=clock.time())
        assert record is not None and record.queue == "emails"


def test_from_url_reads_the_prefix_the_app_and_the_cluster_scheme() -> None:
    storage = from_url("redis://h:6379/2?prefix=shop&socket_timeout=5").storage
    assert (storage.prefix, storage.url, storage.cluster) == (
        "shop:taskflow:",
        "redis://h:6379/2?socket_timeout=5",
        False,
    )
    storage = from_url("rediss+cluster://h:7000", prefix="x", app="billing").storage
    assert (storage.prefix, storage.url, storage.cluster) == ("x:billing:", "rediss://h:7000", True)


def test_an_app_built_from_a_url_namespaces_its_keys_and_a_broker_object_keeps_its_own() -> None:
    app = QueueTasks("billing", broker="redis://h:6379/0?prefix=staging")
    assert isinstance(app.broker, RedisBroker)
    assert app.broker.storage.prefix == "staging:billing:"
    assert app.broker.storage.qkey("default", "work") == "staging:billing:{default}:work"
    kept = QueueTasks("billing", broker=from_url("redis://h:6379/0", prefix="staging"))
    assert isinstance(kept.broker, RedisBroker)
    assert kept.broker.storage.prefix == "staging:taskflow:"


async def test_outcome_of_a_running_task_is_fenced_across_processes(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """A zombie's late DONE after its lease lapsed and another worker claimed is refused."""
    await enqueue_one(broker, clock, retries=1)
    [old] = await claim(broker, clock, lease_s=5)
    await clock.advance(6)
    [new] = await claim(broker, clock, worker_id="w2")
    assert new.token > old.token
    assert await broker.complete([done(old, clock)], now=clock.time()) == [False]
    assert await broker.complete([done(new, clock)], now=clock.time()) == [True]
    record = await broker.storage.get(new.task_id, now=clock.time())
    assert record is not None and record.status is TaskStatus.DONE and record.worker_id == "w2"


async def test_idle_worker_is_woken_by_push_not_by_its_sweep() -> None:
    """A worker whose backstop sweep is a minute away still runs each task at once: the
    listener's callback wakes it (no wake-up lost between its claim and its sleep)."""
    url = f"{redis_url()}?prefix={random_prefix()}"
    # One app's worker and producer, as two processes would build them: the same name.
    worker_app = QueueTasks("w", broker=url, config=GlobalConfig(idle_poll_s=60.0))
    producer = QueueTasks("w", broker=url)

    @worker_app.task(name="echo")
    async def echo_on_worker(x: int) -> int:
        return x

    @producer.task(name="echo")
    async def echo(x: int) -> int:
        return x

    async with worker_app.running(concurrency=2), producer:
        try:
            for i in range(20):
                with anyio.fail_after(5):
                    assert await (await echo.add_task(i)).result() == i
        finally:
            assert isinstance(producer.broker, RedisBroker)
            await delete_prefix(producer.broker)


@pytest.mark.parametrize("size", [0, 31, 32, 255, 256, 65535, 65536, 300_000])
async def test_binary_values_of_every_length_cross_the_batch_encoding(
    broker: RedisBroker, clock: FakeClock, size: int
) -> None:
    """Batches travel as one msgpack argument whose binary strings carry "str" headers of every
    width: a message and a result of each boundary length arrive byte for byte."""
    blob = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    sent = message(broker, payload=blob)
    await broker.enqueue([sent], now=clock.time())
    (delivery,) = await claim(broker, clock)
    assert decode_message(delivery.data) == sent
    result = Outcome(delivery.task_id, delivery.token, OutcomeKind.DONE, result=blob)
    assert await broker.complete([result], now=clock.time()) == [True]
    record = await broker.storage.get(delivery.task_id, now=clock.time())
    assert record is not None and record.result == (blob or None)  # empty: no result


async def test_a_claim_repeated_after_a_lost_reply_returns_the_same_deliveries(
    broker: RedisBroker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that resends a claim (same nonce) gets the first call's deliveries back,
    not a second batch that nobody would run until its leases lapse."""
    ids = [await enqueue_one(broker, clock) for _ in range(5)]
    monkeypatch.setattr("taskflow.redis._broker.os.urandom", lambda n: b"\x01" * n)
    first = await claim(broker, clock, limit=2)
    again = await claim(broker, clock, limit=2)
    assert [d.task_id for d in first] == ids[:2]
    assert again == first
    monkeypatch.undo()
    rest = await claim(broker, clock, limit=10)
    assert [d.task_id for d in rest] == ids[2:]


# -- the queued form, and large batches in chunks -----------------------------------------------


async def _forms(broker: RedisBroker, task_id: str) -> tuple[bool, bool]:
    """Whether the task has its queued form (string) and its hash record."""
    storage = broker.storage
    queued = await storage.client.exists(storage.qkey("default", f"q:{task_id}"))
    hashed = await storage.client.exists(storage.qkey("default", f"t:{task_id}"))
    return bool(queued), bool(hashed)


async def test_a_task_is_one_string_until_the_claim_that_starts_it_writes_its_hash(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """A new task is stored in its queued form only; reads see it as a queued task; the claim
    replaces the string with the hash record, already running."""
    task_id = await enqueue_one(broker, clock, priority=3, order_id="o-1")
    assert await _forms(broker, task_id) == (True, False)
    record = await _record(broker, clock, task_id)
    assert (record.status, record.attempts, record.priority, record.order_id) == (
        TaskStatus.QUEUED,
        0,
        3,
        "o-1",
    )
    (delivery,) = await claim(broker, clock)
    assert (delivery.task_id, delivery.token, delivery.attempt) == (task_id, 1, 1)
    assert await _forms(broker, task_id) == (False, True)
    record = await _record(broker, clock, task_id)
    assert (record.status, record.attempts, record.priority, record.order_id) == (
        TaskStatus.RUNNING,
        1,
        3,
        "o-1",
    )


async def test_a_released_task_queued_again_keeps_its_hash(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """Once claimed, a task is its hash for good: given back, it is queued as a hash (with its
    attempt refunded), and claimed from there."""
    task_id = await enqueue_one(broker, clock)
    (delivery,) = await claim(broker, clock)
    release = Outcome(task_id, delivery.token, OutcomeKind.RELEASE)
    assert await broker.complete([release], now=clock.time()) == [True]
    assert await _forms(broker, task_id) == (False, True)
    record = await _record(broker, clock, task_id)
    assert (record.status, record.attempts) == (TaskStatus.QUEUED, 0)
    (again,) = await claim(broker, clock)
    assert (again.task_id, again.token, again.attempt) == (task_id, 2, 1)


async def _queued_fields(broker: RedisBroker, task_id: str) -> tuple[bytes, list[bytes]]:
    """A queued task's stored string: its 12 sequence digits, and its fields (QF in
    lua/common.lua) as bytes."""
    stored = await broker.storage.client.get(broker.storage.qkey("default", f"q:{task_id}"))
    return stored[:12], unpack(stored[12:])


async def _as_hash(broker: RedisBroker, task_id: str) -> None:
    """Rewrite a queued task's string as the hash a queued task had before the queued form (its
    fields and values as `hash_before_end` in lua/common.lua writes them; no task name then)."""
    client, key = broker.storage.client, broker.storage.qkey("default", f"q:{task_id}")
    digits, fields = await _queued_fields(broker, task_id)
    names = ("msg", "st", "pr", "rt", "dk", "dt", "oid", "nr", "w")
    record = dict(zip(names, fields[: len(names)], strict=True))
    if not record["w"]:
        del record["w"]
    record.update(att=b"0", tok=b"0", m=digits + task_id.encode())
    await client.delete(key)
    await client.hset(broker.storage.qkey("default", f"t:{task_id}"), mapping=record)


async def test_a_task_queued_before_the_queued_form_is_still_read_and_run(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """Tasks queued as hashes (the layout before the queued form) are read, cancelled and
    claimed as before."""
    kept, cancelled = await enqueue_one(broker, clock), await enqueue_one(broker, clock)
    for task_id in (kept, cancelled):
        await _as_hash(broker, task_id)
        assert await _forms(broker, task_id) == (False, True)
        assert (await _record(broker, clock, task_id)).status is TaskStatus.QUEUED
    assert await broker.cancel([cancelled], now=clock.time()) == [CancelResult.CANCELLED]
    (delivery,) = await claim(broker, clock)
    assert (delivery.task_id, delivery.token, delivery.attempt) == (kept, 1, 1)
    assert (await _record(broker, clock, kept)).status is TaskStatus.RUNNING


async def _without_name(broker: RedisBroker, task_id: str) -> None:
    """Rewrite a queued task's string as it was stored before it kept the task's name."""
    digits, fields = await _queued_fields(broker, task_id)
    assert fields[9] == b"tests.task"
    packed = pack(fields[:9])
    await broker.storage.client.set(broker.storage.qkey("default", f"q:{task_id}"), digits + packed)


async def test_tasks_stored_before_events_named_them_still_run_and_their_events_have_no_name(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """A queued form without the name, and a hash record without it, from before this change:
    read, claimed, completed and cancelled as before; their events say "" for the name."""
    old_form, old_hash, cancelled = [await enqueue_one(broker, clock) for _ in range(3)]
    await _without_name(broker, old_form)
    await _without_name(broker, cancelled)
    await _as_hash(broker, old_hash)
    *_, queued = await broker.storage.read_events("default")
    assert await broker.cancel([cancelled], now=clock.time()) == [CancelResult.CANCELLED]
    deliveries = await claim(broker, clock)
    assert [d.task_id for d in deliveries] == [old_form, old_hash]
    assert await broker.complete([done(d, clock) for d in deliveries], now=clock.time()) == [
        True,
        True,
    ]
    fresh = await enqueue_one(broker, clock)
    events = await broker.storage.read_events("default", after=queued.cursor)
    assert [(e.task_id, e.kind, e.name) for e in events] == [
        (cancelled, EventKind.CANCELLED, ""),
        (old_form, EventKind.RUNNING, ""),
        (old_hash, EventKind.RUNNING, ""),
        (old_form, EventKind.DONE, ""),
        (old_hash, EventKind.DONE, ""),
        (fresh, EventKind.QUEUED, "tests.task"),
    ]


async def test_cancelling_a_queued_task_turns_its_string_into_its_hash(
    broker: RedisBroker, clock: FakeClock
) -> None:
    task_id = await enqueue_one(broker, clock)
    assert await broker.cancel([task_id], now=clock.time()) == [CancelResult.CANCELLED]
    assert await _forms(broker, task_id) == (False, True)
    assert (await _record(broker, clock, task_id)).status is TaskStatus.CANCELLED
    assert await claim(broker, clock) == []


async def test_a_large_batch_goes_in_ordered_chunks_that_resolve_as_one_call(
    broker: RedisBroker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch larger than the first chunk is sent as several script calls (2, then 3 each
    here); ids and dedup keys repeated across chunks resolve as in one call, and the tasks are
    claimed in the batch's order."""
    monkeypatch.setattr("taskflow.redis._broker._ENQUEUE_FIRST", 2)
    monkeypatch.setattr("taskflow.redis._broker._ENQUEUE_CHUNK", 3)
    sizes: list[int] = []
    run = broker.storage.run_queue_script

    async def counted(name: str, queue: str, now: float, args: list[Any]) -> Any:
        reply = await run(name, queue, now, args)
        if name == "enqueue":
            sizes.append(len(reply) // 2)
        return reply

    monkeypatch.setattr(broker.storage, "run_queue_script", counted)
    batch = [message(broker) for _ in range(8)]
    batch[6] = message(broker, dedup_key="k")  # in the third chunk: owned by batch[1]
    batch[1] = message(broker, dedup_key="k")
    batch.append(batch[0])  # the same id again, in the last chunk
    batch.append(message(broker))
    results = await broker.enqueue(batch, now=clock.time())
    assert sizes == [2, 3, 3, 2]
    assert [(r.task_id, r.created) for r in results] == [
        (m.id, True) if i not in (6, 8) else ((batch[1].id if i == 6 else m.id), False)
        for i, m in enumerate(batch)
    ]
    claimed = await claim(broker, clock)
    assert [d.task_id for d in claimed] == [r.task_id for r in results if r.created]


# -- direct hand-off to an idle worker ---------------------------------------------------------


async def _watch(broker: RedisBroker, worker_id: str = "w1") -> anyio.Event:
    """Watch "default" as `worker_id` and wait for its hand-off subscription; the returned
    event is set on a wake-up."""
    woke = anyio.Event()
    broker.watch_work(["default"], worker_id=worker_id, callback=woke.set)
    storage = broker.storage
    await storage.subscribe([storage.qkey("default", f"hand:{worker_id}")])
    return woke


async def _park(
    broker: RedisBroker, clock: FakeClock, worker_id: str = "w1", limit: int = 10
) -> anyio.Event:
    """`_watch`, then claim the empty queue with `limit` free slots: the worker is parked."""
    woke = await _watch(broker, worker_id)
    assert await claim(broker, clock, limit=limit, worker_id=worker_id) == []
    return woke


async def _record(broker: RedisBroker, clock: FakeClock, task_id: str) -> TaskRecord:
    record = await broker.storage.get(task_id, now=clock.time())
    assert record is not None
    return record


async def test_a_task_sent_to_an_idle_worker_is_claimed_by_the_enqueue(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """The enqueue itself claims a new task for a parked worker (running, attempt 1, token 1,
    its lease) and sends it, headers and all; the worker's next claim returns it without asking
    the server. Its events name it."""
    woke = await _park(broker, clock)
    task_id = await enqueue_one(broker, clock, headers={"traceparent": "00-abc-01"})
    record = await _record(broker, clock, task_id)
    assert (record.status, record.attempts, record.worker_id) == (TaskStatus.RUNNING, 1, "w1")
    with anyio.fail_after(5):
        await woke.wait()
    (delivery,) = await claim(broker, clock, worker_id="w1")
    assert (delivery.task_id, delivery.token, delivery.attempt) == (task_id, 1, 1)
    assert delivery.lease_expires_at == clock.time() + LEASE_S
    sent = decode_message(delivery.data)
    assert (sent.id, sent.headers) == (task_id, {"traceparent": "00-abc-01"})
    assert await broker.complete([done(delivery, clock)], now=clock.time()) == [True]
    assert (await _record(broker, clock, task_id)).status is TaskStatus.DONE
    events = [(e.kind.value, e.name) for e in await broker.storage.read_events("default")]
    assert events == [("queued", "tests.task"), ("running", "tests.task"), ("done", "tests.task")]


async def test_hand_offs_stop_at_the_free_capacity_the_worker_parked_with(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """Parked with 2 free slots: two tasks are handed off, the third waits in the queue."""
    await _park(broker, clock, limit=2)
    ids = [await enqueue_one(broker, clock) for _ in range(3)]
    states = [(await _record(broker, clock, i)).status for i in ids]
    assert states == [TaskStatus.RUNNING, TaskStatus.RUNNING, TaskStatus.QUEUED]
    stats = await broker.stats(["default"], now=clock.time())
    assert (stats[0].queued, stats[0].running) == (1, 2)


async def test_no_hand_off_jumps_ahead_of_claimable_work(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """While another task is claimable, a new one is queued behind it, not handed off."""
    first = await enqueue_one(broker, clock)
    storage = broker.storage
    await _watch(broker)
    await storage.client.hset(storage.qkey("default", "park"), "w1", f"5 {LEASE_S}")
    second = await enqueue_one(broker, clock)
    assert (await _record(broker, clock, second)).status is TaskStatus.QUEUED
    got = await claim(broker, clock, worker_id="w1")
    assert [d.task_id for d in got] == [first, second]


async def test_a_parked_worker_that_went_away_gets_nothing(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """A park entry nobody listens for (a killed worker's) is dropped by the next enqueue,
    whose task is queued for everyone instead, in its queued form like any new task."""
    storage = broker.storage
    await storage.client.hset(storage.qkey("default", "park"), "ghost", f"5 {LEASE_S}")
    task_id = await enqueue_one(broker, clock)
    assert (await _record(broker, clock, task_id)).status is TaskStatus.QUEUED
    assert await _forms(broker, task_id) == (True, False)
    assert await storage.client.hgetall(storage.qkey("default", "park")) == {}
    (delivery,) = await claim(broker, clock, worker_id="w2")
    assert (delivery.task_id, delivery.token) == (task_id, 1)


async def test_hand_offs_not_taken_are_given_back_when_the_worker_stops_watching(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """unwatch_work releases what was handed off but never claimed (attempt refunded), and
    unparks the worker, so the next task is queued for other workers."""
    woke = await _park(broker, clock)
    task_id = await enqueue_one(broker, clock)
    with anyio.fail_after(5):
        await woke.wait()
    await broker.unwatch_work(["default"], worker_id="w1", now=clock.time())
    record = await _record(broker, clock, task_id)
    assert (record.status, record.attempts) == (TaskStatus.QUEUED, 0)
    later = await enqueue_one(broker, clock)
    assert (await _record(broker, clock, later)).status is TaskStatus.QUEUED
    got = await claim(broker, clock, worker_id="w2")
    assert [(d.task_id, d.token, d.attempt) for d in got] == [(task_id, 2, 1), (later, 1, 1)]


async def test_a_hand_off_arriving_after_the_worker_stopped_is_given_back(
    broker: RedisBroker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-off the server sent before the worker unparked, received after: released."""
    await _park(broker, clock)
    await broker.unwatch_work(["default"], worker_id="w1", now=clock.time())
    given_back = anyio.Event()
    give_back = broker._give_back

    async def give_back_and_tell(outcomes: list[Outcome], now: float) -> None:
        await give_back(outcomes, now)
        given_back.set()

    monkeypatch.setattr(broker, "_give_back", give_back_and_tell)
    storage = broker.storage
    # As if an enqueue had read the park entry just before unwatch_work removed it.
    await storage.client.hset(storage.qkey("default", "park"), "w1", f"5 {LEASE_S}")
    task_id = await enqueue_one(broker, clock)
    with anyio.fail_after(5):
        await given_back.wait()
    assert (await _record(broker, clock, task_id)).status is TaskStatus.QUEUED
    (delivery,) = await claim(broker, clock, worker_id="w2")
    assert (delivery.task_id, delivery.token, delivery.attempt) == (task_id, 2, 1)


async def test_a_stopped_worker_is_no_longer_handed_tasks() -> None:
    """A worker that stops unparks itself: with its app (and listener) still open, tasks
    sent afterwards wait in the queue instead of going to a worker that will not run them."""
    url = f"{redis_url()}?prefix={random_prefix()}"
    app = QueueTasks("w", broker=url)

    @app.task
    async def echo(x: int) -> int:
        return x

    async with app:
        assert isinstance(app.broker, RedisBroker)
        try:
            async with app.running(concurrency=2):
                for i in range(5):  # the first claims find the queue dry: the worker parks
                    with anyio.fail_after(5):
                        assert await (await echo.add_task(i)).result() == i
            handle = await echo.add_task(99)
            record = await app.broker.storage.get(handle.task_id, now=app.clock.time())
            assert record is not None and record.status is TaskStatus.QUEUED
        finally:
            await delete_prefix(app.broker)


# -- results of tasks this process sent ----------------------------------------------------------


async def _subscribed(broker: RedisBroker, clock: FakeClock) -> None:
    """Wait for one task's result, so this process's inbox on "default" is subscribed."""
    task_id = await enqueue_one(broker, clock)
    (delivery,) = await claim(broker, clock, worker_id="warm")
    assert await broker.complete([done(delivery, clock)], now=clock.time()) == [True]
    with anyio.fail_after(5):
        await broker.storage.wait(task_id, timeout=None, now=clock.time())


async def _waiters(storage: RedisStorage, task_id: str) -> bytes | None:
    """The inboxes registered on a task (its ``w``), from its hash record or its queued form
    (12 sequence digits, then a msgpack array whose 9th entry is ``w``, empty for none)."""
    key = storage.qkey("default", f"t:{task_id}")
    if await storage.client.exists(key):
        return await storage.client.hget(key, "w")  # type: ignore[no-any-return]
    queued = await storage.client.get(storage.qkey("default", f"q:{task_id}"))
    assert queued is not None, f"task {task_id} has neither form"
    fields = msgspec.msgpack.decode(queued[12:], type=list[msgspec.Raw])  # binary message
    w = msgspec.msgpack.decode(fields[8], type=str)
    return w.encode() if w else None


def _count_reads(broker: RedisBroker, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record every `fetch_raw` of `broker`'s storage (its `outcome` flag), from now on."""
    storage = broker.storage
    fetch_raw = storage.fetch_raw
    reads: list[bool] = []

    async def counted(task_ids: Sequence[str], *, outcome: bool = False) -> Any:
        reads.append(outcome)
        return await fetch_raw(task_ids, outcome=outcome)

    monkeypatch.setattr(storage, "fetch_raw", counted)
    return reads


@pytest.mark.parametrize("ends", ["before result()", "while waiting"])
async def test_the_result_of_a_task_sent_after_a_wait_needs_no_read(
    broker: RedisBroker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, ends: str
) -> None:
    """Once this process waits on a queue, the tasks it sends there carry its inbox from the
    start: their outcome is pushed here, and result() reads nothing, however soon it ends."""
    await _subscribed(broker, clock)
    task_id = await enqueue_one(broker, clock)
    storage = broker.storage
    assert await _waiters(storage, task_id) == storage.inbox("default").encode()
    reads = _count_reads(broker, monkeypatch)
    async with twin(broker) as other:
        (delivery,) = await claim(other, clock, worker_id="elsewhere")

        async def finish() -> None:
            if ends == "while waiting":
                await anyio.wait_all_tasks_blocked()
            assert await other.complete([done(delivery, clock, 3)], now=clock.time()) == [True]

        with anyio.fail_after(10):
            if ends == "before result()":
                pushed = _when_kept(storage, monkeypatch)
                await finish()
                await pushed.wait()  # the push travels on its own connection
            async with anyio.create_task_group() as tg:
                if ends == "while waiting":
                    tg.start_soon(finish)
                outcome = await storage.wait(task_id, timeout=None, now=clock.time())
    assert (outcome.status, outcome.result) == (TaskStatus.DONE, encode_value(3))
    assert reads == []


def _when_kept(storage: RedisStorage, monkeypatch: pytest.MonkeyPatch) -> anyio.Event:
    """An event set once the storage keeps the next outcome pushed before anyone waited."""
    kept = anyio.Event()
    put = storage.early.put

    def put_and_tell(task_id: str, values: list[bytes | None]) -> None:
        put(task_id, values)
        kept.set()

    monkeypatch.setattr(storage.early, "put", put_and_tell)
    return kept


async def test_an_outcome_pushed_before_the_enqueue_reply_is_handled_is_kept(
    broker: RedisBroker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task can end (and its push arrive) before the producer has handled the reply of the
    enqueue that created it: the outcome is kept for the result() that follows."""
    await _subscribed(broker, clock)
    storage = broker.storage
    registered = storage.early.registered
    other_broker = twin(broker)

    def end_first(task_ids: Sequence[str], inbox: str) -> None:
        # Called as the enqueue's reply is handled: by then the task has already ended.
        assert all(task_id in storage.early for task_id in task_ids)
        registered(task_ids, inbox)

    async with other_broker:
        claimed: list[Delivery] = []
        original = storage.run_queue_script

        async def enqueue_then_end(name: str, queue: str, now: float, args: list[Any]) -> Any:
            reply = await original(name, queue, now, args)
            if name == "enqueue":
                claimed.extend(await claim(other_broker, clock, worker_id="elsewhere"))
                pushed = _when_kept(storage, monkeypatch)
                await other_broker.complete([done(claimed[0], clock)], now=clock.time())
                with anyio.fail_after(5):
                    await pushed.wait()  # the push travels on its own connection
            return reply

        monkeypatch.setattr(storage, "run_queue_script", enqueue_then_end)
        monkeypatch.setattr(storage.early, "registered", end_first)
        task_id = await enqueue_one(broker, clock)
        monkeypatch.undo()
    with anyio.fail_after(5):
        outcome = await storage.wait(task_id, timeout=None, now=clock.time())
    assert outcome.status is TaskStatus.DONE


async def test_registrations_are_not_trusted_across_a_resubscribe(
    broker: RedisBroker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pushes sent while the listener was reconnecting are lost: after a resubscribe of the
    inbox, result() of a task registered before it reads the stored state."""
    await _subscribed(broker, clock)
    task_id = await enqueue_one(broker, clock)
    storage = broker.storage
    (delivery,) = await claim(broker, clock)
    storage._on_resubscribed(storage.inbox("default"))  # as after a reconnect
    # A completion whose push was lost: no inbox left to push to, no local notification.
    await storage.client.hdel(storage.qkey("default", f"t:{task_id}"), "w")
    await storage.run_queue_script(
        "complete", "default", clock.time(), complete_args([done(delivery, clock, 9)], 100)
    )
    reads = _count_reads(broker, monkeypatch)
    with anyio.fail_after(5):
        outcome = await storage.wait(task_id, timeout=None, now=clock.time())
    assert outcome.result == encode_value(9) and reads == [True]


async def test_nothing_is_registered_by_a_producer_that_never_waited(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """A producer that never waits subscribes to nothing: its tasks push nothing to it."""
    task_id = await enqueue_one(broker, clock)
    storage = broker.storage
    assert await _waiters(storage, task_id) is None
    assert not storage.early


def test_early_outcomes_are_bounded_in_count_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outcomes nobody waited for yet are dropped oldest first beyond the entry limit or the
    byte limit (results can be large), so a producer that never asks for most results keeps
    a bounded amount of them."""
    monkeypatch.setattr("taskflow.redis._early._REGISTERED_MAX", 3)
    monkeypatch.setattr("taskflow.redis._early._EARLY_BYTES_MAX", 100)
    early = EarlyOutcomes()
    for i in range(5):
        early.put(f"t{i}", [b"done", b"r", None, None])
    assert len(early) == 3 and "t1" not in early and "t2" in early
    early.put("big", [b"done", b"x" * 90, None, None])
    assert len(early) == 2 and "t4" in early and "big" in early  # 5 + 94 bytes fit in 100
    assert early.pop("big") == [b"done", b"x" * 90, None, None] and len(early) == 1
    early.put("t9", [b"done", b"y" * 96, None, None])  # 100 bytes: t4 goes, t9 stays
    assert len(early) == 1 and "t9" in early
