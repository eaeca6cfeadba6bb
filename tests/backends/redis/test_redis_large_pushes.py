"""Nothing unbounded goes over pub/sub (issue 14, D3).

Redis disconnects a subscriber whose unread messages pass ``client-output-buffer-limit
pubsub`` (32 MB hard by default), losing everything sent to it. A task handed off to an idle
worker travels whole over pub/sub, and so does an outcome pushed to a waiting process: a task
or a result over the limit used to drop the listener (the hand-off was lost until its lease
lapsed). Larger than the scripts' ``PUSH_MAX_BYTES`` (256 KiB), a task is stored and claimed as
usual, and an outcome is pushed as "ended, read it". The server here is a redis-server of the
test's own with a 1 MB limit, so the tests stay small.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
import redis.asyncio as aioredis

from taskflow.abc import TaskStatus, decode_message, encode_value
from taskflow.redis import RedisBroker, from_url
from taskflow.testing import FakeClock
from tests.conformance._helpers import claim, done, enqueue_one, message
from tests.plugins.backend_redis import random_prefix, twin
from tests.services import free_port, redis_url, start_redis_server, stop_process

pytestmark = pytest.mark.redis

#: Bigger than the server's pub/sub output limit below, and than PUSH_MAX_BYTES.
BIG = 2_000_000


@pytest.fixture
def small_buffer_port() -> Iterator[int]:
    """A redis-server of this test's own that drops a subscriber past 1 MB of unread data."""
    redis_url()  # skip (or fail) with the usual reason if Redis is not installed/running
    port = free_port()
    proc: subprocess.Popen[bytes] = start_redis_server(port)
    try:
        yield port
    finally:
        stop_process(proc)


@pytest.fixture
async def broker(small_buffer_port: int) -> AsyncIterator[RedisBroker]:
    async with aioredis.Redis(port=small_buffer_port) as admin:
        await admin.config_set("client-output-buffer-limit", "pubsub 1mb 1mb 0")
    async with from_url(f"redis://127.0.0.1:{small_buffer_port}/0", prefix=random_prefix()) as b:
        yield b


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _count_resubscribes(broker: RedisBroker, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The channels `broker`'s listener subscribes again after a lost connection, from now."""
    storage = broker.storage
    again: list[str] = []
    on_resubscribed = storage._on_resubscribed

    def counted(channel: str) -> None:
        again.append(channel)
        on_resubscribed(channel)

    monkeypatch.setattr(storage._listener, "_on_resubscribed", counted)
    return again


async def _park(broker: RedisBroker, clock: FakeClock) -> anyio.Event:
    """Watch "default" as worker "w1", subscribed to its hand-off channel, and park it with 10
    free slots (its claim finds the queue dry); the event is set on a wake-up or hand-off."""
    woke = anyio.Event()
    broker.watch_work(["default"], worker_id="w1", callback=woke.set)
    storage = broker.storage
    await storage.subscribe([storage.qkey("default", "hand:w1")])
    assert await claim(broker, clock, limit=10, worker_id="w1") == []
    return woke


async def _status(broker: RedisBroker, clock: FakeClock, task_id: str) -> TaskStatus:
    record = await broker.storage.get(task_id, now=clock.time())
    assert record is not None
    return record.status


async def test_a_task_too_large_to_hand_off_is_stored_and_claimed_as_usual(
    broker: RedisBroker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    again = _count_resubscribes(broker, monkeypatch)
    woke = await _park(broker, clock)
    payload = encode_value([["x" * BIG], {}])
    task_id = await enqueue_one(broker, clock, payload=payload)
    assert await _status(broker, clock, task_id) is TaskStatus.QUEUED
    with anyio.fail_after(5):
        await woke.wait()
    (delivery,) = await claim(broker, clock, worker_id="w1")
    assert decode_message(delivery.data).payload == payload
    assert await broker.complete([done(delivery, clock)], now=clock.time()) == [True]
    assert again == []


async def test_hand_offs_stop_before_the_task_that_would_make_them_too_large(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """Three 150 kB tasks in one batch: the first is handed off, the two after it (together
    over the limit) wait in the queue, in order."""
    woke = await _park(broker, clock)
    payload = encode_value([["x" * 150_000], {}])
    results = await broker.enqueue(
        [message(broker, payload=payload) for _ in range(3)], now=clock.time()
    )
    ids = [r.task_id for r in results]
    states = [await _status(broker, clock, i) for i in ids]
    assert states == [TaskStatus.RUNNING, TaskStatus.QUEUED, TaskStatus.QUEUED]
    with anyio.fail_after(5):
        await woke.wait()  # by the hand-off, published before the wake-up
    handed = await claim(broker, clock, worker_id="w1")
    claimed = await claim(broker, clock, worker_id="w1")
    assert [d.task_id for d in handed + claimed] == ids
    assert [len(handed), len(claimed)] == [1, 2]


async def test_a_result_too_large_to_push_is_read_and_the_listener_stays(
    broker: RedisBroker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process waits on "default", so the tasks it sends carry its inbox; another process
    completes them. The 2 MB result is not pushed (the push says "ended, read it"), its waiter
    reads it, and the listener is not dropped: the small outcome pushed after it arrives on the
    same connection."""
    storage = broker.storage
    warm = await enqueue_one(broker, clock)
    async with twin(broker) as other:
        (first,) = await claim(other, clock, worker_id="w2")
        assert await other.complete([done(first, clock)], now=clock.time()) == [True]
        with anyio.fail_after(5):
            await storage.wait(warm, timeout=None, now=clock.time())  # the inbox is subscribed
        again = _count_resubscribes(broker, monkeypatch)
        big, small = await enqueue_one(broker, clock), await enqueue_one(broker, clock)
        deliveries = {d.task_id: d for d in await claim(other, clock, worker_id="w2")}
        completed = [done(deliveries[big], clock, "x" * BIG)]
        assert await other.complete(completed, now=clock.time()) == [True]
        assert await other.complete([done(deliveries[small], clock)], now=clock.time()) == [True]
        with anyio.fail_after(10):
            outcome = await storage.wait(small, timeout=None, now=clock.time())
            assert outcome.status is TaskStatus.DONE
            outcome = await storage.wait(big, timeout=None, now=clock.time())
    assert outcome.result == encode_value("x" * BIG)
    assert again == []
