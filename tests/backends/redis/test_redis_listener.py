"""The shared pub/sub listener on a single node: its taken-over connection parsed by hiredis.

Real servers only: a private ``redis-server`` per test (these tests kill and pause its clients).
The storage-level guarantees (subscribe before read, reconnects, a server restart) are tested
in ``test_redis_backend.py``; here the listener is driven directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from taskflow.redis import from_url
from taskflow.redis._client import close_client, make_client
from taskflow.redis._listener import Listener, _DirectNode, _NodeSubscription, _PushLink
from tests.plugins.backend_redis import random_prefix
from tests.services import redis_url

pytestmark = pytest.mark.redis


class Received:
    """What a listener handed over: messages in order, resubscriptions, and events to wait on."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.resubscribed: list[str] = []
        self.changed = asyncio.Event()

    def on_message(self, channel: str, data: bytes) -> None:
        self.messages.append((channel, data))
        self.changed.set()

    def on_resubscribed(self, channel: str) -> None:
        self.resubscribed.append(channel)
        self.changed.set()

    async def until(self, condition: Any) -> None:
        """Wait (under the caller's ``fail_after``) until ``condition()`` holds."""
        while not condition():
            self.changed.clear()
            await self.changed.wait()


async def _open(url: str, received: Received, **options: Any) -> tuple[Any, Listener]:
    client = make_client(url, False, options)
    listener = Listener(
        client,
        sharded=False,
        node_options={},
        on_message=received.on_message,
        on_resubscribed=received.on_resubscribed,
    )
    return client, listener


@pytest.fixture
async def opened(private_port: int) -> AsyncIterator[tuple[Any, Listener, Received]]:
    received = Received()
    client, listener = await _open(f"redis://127.0.0.1:{private_port}/0", received)
    try:
        yield client, listener, received
    finally:
        await listener.close()
        await close_client(client)


def _direct(listener: Listener) -> _DirectNode:
    node = listener._nodes["single"]
    assert isinstance(node, _DirectNode)
    return node


def _pubsub_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "taskflow-redis-pubsub"]


@pytest.mark.parametrize("protocol", [2, 3])
async def test_messages_arrive_through_the_taken_over_connection_in_resp2_and_resp3(
    private_port: int, protocol: int
) -> None:
    """RESP2 replies or RESP3 pushes: confirmations and messages are told apart alike, on the
    client's database and protocol, with no reader task."""
    received = Received()
    url = f"redis://127.0.0.1:{private_port}/4"
    client, listener = await _open(url, received, protocol=protocol)
    try:
        with anyio.fail_after(10):
            await listener.subscribe(["a", "b"])
            assert listener.is_subscribed("a") and listener.is_subscribed("b")
            assert _pubsub_tasks() == []
            [info] = await client.client_list(_type="pubsub")
            assert info["resp"] == str(protocol) and info["sub"] == "2"
            assert await client.publish("b", b"\x00two") == 1
            assert await client.publish("a", "one") == 1
            await received.until(lambda: len(received.messages) == 2)
        assert received.messages == [("b", b"\x00two"), ("a", b"one")]
        assert received.resubscribed == []
    finally:
        await listener.close()
        await close_client(client)


async def test_a_burst_of_messages_is_delivered_whole_and_in_order(
    opened: tuple[Any, Listener, Received],
) -> None:
    client, listener, received = opened
    count = 5000
    with anyio.fail_after(20):
        await listener.subscribe(["burst"])
        async with client.pipeline(transaction=False) as pipe:
            for i in range(count):
                pipe.publish("burst", b"%d" % i + b"x" * (i % 300))
            assert await pipe.execute() == [1] * count
        await received.until(lambda: len(received.messages) >= count)
    assert received.messages == [("burst", b"%d" % i + b"x" * (i % 300)) for i in range(count)]


async def test_concurrent_subscribers_share_one_confirmation_and_confirmed_channels_are_free(
    opened: tuple[Any, Listener, Received],
) -> None:
    client, listener, _ = opened
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(listener.subscribe, ["x", "y"])
        before = await client.info("commandstats")
        await listener.subscribe(["x", "y"])  # confirmed: no command sent
        after = await client.info("commandstats")
    assert before["cmdstat_subscribe"]["calls"] == after["cmdstat_subscribe"]["calls"]
    # Sent once by the first caller; the other 49 waited for its confirmation.
    assert after["cmdstat_subscribe"]["calls"] == 1
    assert len(listener._nodes) == 1


async def test_resubscribes_after_client_kill_and_keeps_delivering(
    private_port: int, opened: tuple[Any, Listener, Received]
) -> None:
    client, listener, received = opened
    with anyio.fail_after(10):
        await listener.subscribe(["one", "two"])
        first = _direct(listener).link
        async with aioredis.Redis(port=private_port) as admin:
            assert await admin.client_kill_filter(_type="pubsub", skipme=True) == 1
        await received.until(lambda: sorted(received.resubscribed) == ["one", "two"])
        assert _direct(listener).link is not first
        assert await client.publish("two", b"after") == 1
        await received.until(lambda: received.messages == [("two", b"after")])
        # A channel subscribed after the reconnect is confirmed the first time, not "again".
        await listener.subscribe(["three"])
        assert await client.publish("three", b"3") == 1
        await received.until(lambda: len(received.messages) == 2)
    assert received.messages[1] == ("three", b"3")
    assert sorted(received.resubscribed) == ["one", "two"]


async def test_close_with_subscriptions_pending_leaves_nothing_behind(
    private_port: int, opened: tuple[Any, Listener, Received]
) -> None:
    """The server holds back the confirmation (CLIENT PAUSE): close fails the waiting
    subscriber at once and closes the socket; no task is left."""
    _, listener, _ = opened
    outcome: list[BaseException] = []

    async def subscribe() -> None:
        try:
            await listener.subscribe(["held"])
        except RedisConnectionError as exc:
            outcome.append(exc)

    with anyio.fail_after(10):
        await listener.subscribe(["first"])
        link = _direct(listener).link
        assert isinstance(link, _PushLink)
        async with aioredis.Redis(port=private_port) as admin:
            await admin.execute_command("CLIENT", "PAUSE", "20000", "ALL")
        async with anyio.create_task_group() as tg:
            tg.start_soon(subscribe)
            await anyio.wait_all_tasks_blocked()
            assert not listener.is_subscribed("held")
            await listener.close()
    assert len(outcome) == 1 and "closed" in str(outcome[0])
    assert link.closed.done() and link.transport.is_closing()
    assert listener._nodes == {} and _pubsub_tasks() == []
    with pytest.raises(RedisConnectionError, match="closed"):
        await listener.subscribe(["later"])


async def test_a_pool_that_cannot_be_taken_over_keeps_redis_pys_pubsub(
    private_port: int,
) -> None:
    received = Received()
    url = f"redis://127.0.0.1:{private_port}/0"
    client, listener = await _open(url, received, decode_responses=True)
    try:
        with anyio.fail_after(10):
            await listener.subscribe(["slow"])
            assert isinstance(listener._nodes["single"], _NodeSubscription)
            assert await client.publish("slow", "via redis-py") == 1
            await received.until(lambda: len(received.messages) == 1)
        assert received.messages == [("slow", "via redis-py")]
    finally:
        await listener.close()
        await close_client(client)


async def test_single_node_storage_listens_on_the_fast_path_cluster_does_not(
    redis_cluster_url: str,
) -> None:
    async with from_url(redis_url(), prefix=random_prefix()) as b:
        listener = b.storage._require_listener()
        await listener.subscribe([b.storage.inbox("default")])
        assert isinstance(listener._nodes["single"], _DirectNode)
    async with from_url(redis_cluster_url, prefix=random_prefix()) as b:
        listener = b.storage._require_listener()
        await listener.subscribe([b.storage.inbox("default")])
        assert all(isinstance(n, _NodeSubscription) for n in listener._nodes.values())


async def test_a_refused_subscription_fails_at_once_with_a_clear_error(private_port: int) -> None:
    """An ACL without the channel makes SUBSCRIBE fail: the caller gets the refusal at once
    (not after the 10 s confirmation timeout), and a later allowed channel still works."""
    admin = aioredis.Redis(port=private_port)
    await admin.execute_command(
        "ACL", "SETUSER", "limited", "on", ">secret", "~*", "+@all", "resetchannels", "&ok:*"
    )
    received = Received()
    client, listener = await _open(f"redis://limited:secret@127.0.0.1:{private_port}/0", received)
    try:
        with anyio.fail_after(5):
            with pytest.raises(RedisError, match=r"refused the subscription to 'no:1'"):
                await listener.subscribe(["no:1"])
            await listener.subscribe(["ok:1"])
            assert listener.is_subscribed("ok:1") and not listener.is_subscribed("no:1")
            await admin.publish("ok:1", b"hello")
            await received.until(lambda: received.messages)
        assert received.messages == [("ok:1", b"hello")]
    finally:
        await listener.close()
        await close_client(client)
        await admin.aclose()
