"""One shared pub/sub listener per storage (so per process), for result waiters and idle workers.

What the storage subscribes to: its inbox on each queue it waits on (``{Q}:inbox:<token>``,
where terminal writes push the outcomes of the tasks it waits for, see ``push_later`` in
``lua/common.lua``), each queue's ``work`` channel (``1`` when new work becomes claimable), and
a parked worker's hand-off channel (``{Q}:hand:<worker>``, tasks enqueue claimed for it). This
listener keeps one subscription per channel, whatever the number of waiters, on one connection
per server (a Redis Cluster shards channels by hash slot, so there is one connection per node
that owns a queue's slot, subscribed with SSUBSCRIBE), and hands every message to `on_message`;
what a message means is the storage's business (``_storage.py``).

On a single node the connection is opened by redis-py (TLS, AUTH or HELLO, SELECT as the client's
options say) and then taken over by a protocol of ours (``_redispy.py``, as the lane's): its
``data_received`` parses with hiredis and hands each message to `on_message` at once, with no
reader task and no redis-py machinery per message (RESP2 replies or RESP3 pushes alike). A pool
whose connections cannot be taken over, and a cluster, read through redis-py's ``PubSub``.

`subscribe` returns only once the server confirmed the subscription, so a caller that subscribes
and then reads the stored state cannot miss a notification sent in between. When a connection
drops, it is opened again (with jittered exponential backoff) and every channel is subscribed
again; the server then confirms each channel again, and the listener reports that through
`on_resubscribed` so the storage can re-read what it may have missed while disconnected.

What does not live here: redis-py's private parts (``_redispy.py``), what messages mean
(``_storage.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.connection import ConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError

from ._lane import pack_command
from ._redispy import NOT_ENOUGH_DATA, can_take_over, new_reader, take_over

__all__ = ["Listener"]

logger = logging.getLogger("taskflow.redis")

_CONFIRM_TIMEOUT_S = 10.0
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 2.0
_SUBSCRIBE_ATTEMPTS = 8
_CLOSE_WAIT_S: Final = 5.0


class _NodeSubscription:
    """The pub/sub connection to one server and the task reading from it."""

    def __init__(self, pubsub: Any, own_client: Any | None) -> None:
        self.pubsub = pubsub
        self.own_client = own_client
        self.reader: asyncio.Task[None] | None = None


class _PushLink(asyncio.Protocol):
    """One live pub/sub connection taken over from redis-py: parses what arrives with hiredis
    and hands it to the listener as it comes (messages and subscription confirmations)."""

    def __init__(
        self, transport: asyncio.Transport, peer: str, listener: Listener, encoding: str
    ) -> None:
        self.transport = transport
        self.encoding = encoding
        self.peer = peer
        self.listener = listener
        self.lost = False
        self.stream_writer: Any = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_lost: Callable[[_PushLink], None] | None = None
        self._reader = new_reader()

    def write(self, *args: str) -> None:
        self.transport.write(pack_command(args, self.encoding))

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        listener = self.listener
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as exc:
                logger.warning(
                    "bad pub/sub reply from Redis at %s (%s); reconnecting", self.peer, exc
                )
                self.transport.abort()
                return
            if reply is NOT_ENOUGH_DATA:
                return
            # A list in RESP2, a hiredis.PushNotification (a list too) in RESP3.
            if not isinstance(reply, list):
                if isinstance(reply, Exception):
                    logger.warning("Redis at %s refused a subscription: %s", self.peer, reply)
                    listener._refuse(reply)
                continue
            if len(reply) < 3:
                continue
            kind = reply[0]
            try:
                if kind == b"message":
                    listener._on_message(reply[1].decode(), reply[2])
                elif kind == b"subscribe":
                    listener._confirm(reply[1].decode())
            except Exception:  # one bad message must not stop every waiter's wake-ups
                logger.exception("ignoring a Redis pub/sub message that failed: %r", reply)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_lost is not None:
            self.on_lost(self)


class _DirectNode:
    """The single node's pub/sub connection, read by a `_PushLink` (no reader task).

    Every channel ever subscribed is kept in `channels`; a new connection subscribes to all of
    them at once, so a dropped connection comes back with every subscription.
    """

    def __init__(self, pool: ConnectionPool, listener: Listener) -> None:
        self._pool = pool
        self._listener = listener
        self.channels: dict[str, None] = {}
        self.link: _PushLink | None = None
        #: The task reconnecting after a loss (None while connected or closed).
        self.reader: asyncio.Task[None] | None = None
        self._connect_lock = asyncio.Lock()
        self._closed = False
        self._backoff = ExponentialWithJitterBackoff(base=_BACKOFF_FIRST_S, cap=_BACKOFF_MAX_S)

    async def subscribe(self, channels: list[str]) -> None:
        """SUBSCRIBE `channels`: at once on a live connection, else with every other channel
        on the next one (opened here, retrying as the redis-py path does)."""
        for channel in channels:
            self.channels[channel] = None
        link = self.link
        if link is not None and not link.lost:
            link.write("SUBSCRIBE", *channels)
            return
        backoff = _BACKOFF_FIRST_S
        for attempt in range(_SUBSCRIBE_ATTEMPTS):
            try:
                await self._connect()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed or attempt + 1 == _SUBSCRIBE_ATTEMPTS:
                    for channel in channels:
                        self.channels.pop(channel, None)
                    raise
                logger.info("subscribing to %s failed (%r); retrying", channels, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _connect(self) -> None:
        async with self._connect_lock:
            link = self.link
            if link is not None and not link.lost:
                return  # another caller connected (and subscribed every channel) meanwhile
            if self._closed:
                raise RedisConnectionError("the Redis pub/sub listener is closed")
            # Channel names are written in the client's encoding, as redis-py's PubSub does.
            encoding = str(self._pool.connection_kwargs.get("encoding", "utf-8"))
            link = await take_over(
                self._pool,
                lambda transport, peer: _PushLink(transport, peer, self._listener, encoding),
                closed=lambda: self._closed,
                closed_error=lambda: RedisConnectionError("the Redis pub/sub listener is closed"),
            )
            self.link = link
            link.on_lost = self._lost
            if self.channels:
                link.write("SUBSCRIBE", *self.channels)

    def _lost(self, link: _PushLink) -> None:
        if self._closed or link is not self.link:
            return
        logger.warning("Redis pub/sub connection to %s was lost; reconnecting", link.peer)
        if self.reader is None or self.reader.done():
            self.reader = asyncio.get_running_loop().create_task(
                self._reconnect(), name="taskflow-redis-pubsub"
            )

    async def _reconnect(self) -> None:
        failures = 0
        while not self._closed:
            failures += 1
            await asyncio.sleep(self._backoff.compute(failures))
            try:
                await self._connect()
                return
            except Exception as exc:
                if self._closed:
                    return
                logger.warning(
                    "reconnecting the Redis pub/sub connection failed (%s: %s); retrying",
                    type(exc).__name__,
                    exc,
                )

    async def aclose(self) -> None:
        self._closed = True
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        # A connection being opened meanwhile is closed by `take_over` once it sees `_closed`.
        link, self.link = self.link, None
        if link is None:
            return
        link.transport.close()
        try:
            async with asyncio.timeout(_CLOSE_WAIT_S):
                await link.closed
        except TimeoutError:
            link.transport.abort()


class Listener:
    """Channel subscriptions shared by every waiter of one storage.

    Args:
        client: a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``.
        sharded: True on a cluster: SSUBSCRIBE on the node owning each channel's slot.
        node_options: connection options (credentials, TLS) for per-node clients on a cluster.
        on_message: called with (channel, data) for every published message.
        on_resubscribed: called with a channel after a reconnect re-established it.
    """

    def __init__(
        self,
        client: Any,
        *,
        sharded: bool,
        node_options: dict[str, Any],
        on_message: Callable[[str, bytes], None],
        on_resubscribed: Callable[[str], None],
    ) -> None:
        self._client = client
        self._sharded = sharded
        self._node_options = node_options
        self._on_message = on_message
        self._on_resubscribed = on_resubscribed
        self._nodes: dict[str, _NodeSubscription | _DirectNode] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        #: Channels the server refused (an error reply to SUBSCRIBE, e.g. an ACL without the
        #: channel), with the error, until the callers waiting for them have seen it.
        self._refused: dict[str, Exception] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    def is_subscribed(self, channel: str) -> bool:
        """True once `channel`'s subscription was confirmed by the server."""
        event = self._confirmed.get(channel)
        return event is not None and event.is_set()

    async def subscribe(self, channels: Iterable[str]) -> None:
        """Subscribe to `channels` (those not yet subscribed) and wait for the confirmations.

        Already-subscribed channels cost nothing (no lock, no round trip), so thousands of
        waiters starting at once go straight on to their (coalesced) reads. New channels are
        marked pending at once, so concurrent callers wait for the same confirmation instead
        of subscribing again; they are sent in one command per hash slot.
        """
        wanted = list(dict.fromkeys(channels))
        new = [c for c in wanted if c not in self._confirmed]
        if new:
            await self._subscribe_new(new)
        await self._await_confirmations(wanted)
        refused = {c: self._refused[c] for c in wanted if c in self._refused}
        if refused:
            channel, error = next(iter(refused.items()))
            raise RedisError(
                f"Redis refused the subscription to {channel!r} ({error}); a user restricted by "
                "an ACL needs the channel pattern of taskflow's keys, e.g. "
                "'ACL SETUSER <user> &<prefix>:*'"
            ) from error

    async def _subscribe_new(self, new: list[str]) -> None:
        """Mark `new` pending and send their subscriptions; unmark them if that fails."""
        for channel in new:
            self._confirmed[channel] = asyncio.Event()
            self._refused.pop(channel, None)  # asked again: the new answer counts
        try:
            async with self._lock:
                for group in self._by_slot(new):
                    await self._send_subscribe(group)
        except BaseException:
            for channel in new:
                event = self._confirmed.get(channel)
                if event is not None and not event.is_set():
                    del self._confirmed[channel]
            raise

    async def _await_confirmations(self, wanted: list[str]) -> None:
        """Wait (bounded) for the server to confirm each of `wanted` not yet confirmed."""
        events = [self._confirmed.get(c) for c in wanted]
        pending = [e.wait() for e in events if e is not None and not e.is_set()]
        if not pending:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*pending), _CONFIRM_TIMEOUT_S)
        except TimeoutError:
            logger.warning(
                "Redis did not confirm subscriptions to %s within %.0f s; carrying on "
                "(waiters fall back to their own timeouts)",
                wanted,
                _CONFIRM_TIMEOUT_S,
            )
        if self._closed:
            raise RedisConnectionError("the Redis pub/sub listener was closed")

    def _by_slot(self, channels: list[str]) -> list[list[str]]:
        if not self._sharded:
            return [channels]
        groups: dict[int, list[str]] = {}
        for channel in channels:
            groups.setdefault(key_slot(channel.encode()), []).append(channel)
        return list(groups.values())

    async def _send_subscribe(self, channels: list[str]) -> None:
        """(S)SUBSCRIBE `channels` (one hash slot) on their node, retrying while it reconnects."""
        if self._closed:
            raise RedisConnectionError("the Redis pub/sub listener is closed")
        node = self._node_for(channels[0])
        if isinstance(node, _DirectNode):
            await node.subscribe(channels)
            return
        backoff = _BACKOFF_FIRST_S
        for attempt in range(_SUBSCRIBE_ATTEMPTS):
            try:
                if self._sharded:
                    await node.pubsub.ssubscribe(*channels)
                else:
                    await node.pubsub.subscribe(*channels)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The reader may be reconnecting this very connection; try again shortly.
                if attempt + 1 == _SUBSCRIBE_ATTEMPTS:
                    raise
                logger.info("subscribing to %s failed (%r); retrying", channels, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
        if node.reader is None or node.reader.done():
            node.reader = asyncio.create_task(
                self._read_forever(node), name="taskflow-redis-pubsub"
            )

    def _node_for(self, channel: str) -> _NodeSubscription | _DirectNode:
        if not self._sharded:
            name = "single"
            if name not in self._nodes:
                pool = self._client.connection_pool
                if can_take_over(pool):
                    self._nodes[name] = _DirectNode(pool, self)
                else:
                    self._nodes[name] = _NodeSubscription(self._client.pubsub(), None)
            return self._nodes[name]
        cluster_node = self._client.get_node_from_key(channel)
        name = cluster_node.name
        if name not in self._nodes:
            own = aioredis.Redis(
                host=cluster_node.host, port=cluster_node.port, **self._node_options
            )
            self._nodes[name] = _NodeSubscription(own.pubsub(), own)
        return self._nodes[name]

    async def _read_forever(self, node: _NodeSubscription) -> None:
        backoff = _BACKOFF_FIRST_S
        while True:
            try:
                message = await node.pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: redis-py reconnects on the next read
                logger.warning(
                    "Redis pub/sub connection failed (%s: %s); reconnecting in %.2f s",
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            backoff = _BACKOFF_FIRST_S
            if message is not None:
                try:
                    self._handle(message)
                except Exception:  # one bad message must not stop every waiter's wake-ups
                    logger.exception("ignoring a Redis pub/sub message that failed: %r", message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if isinstance(kind, bytes):
            kind = kind.decode()
        channel_raw = message.get("channel")
        if channel_raw is None:
            return
        channel = channel_raw.decode() if isinstance(channel_raw, bytes) else str(channel_raw)
        if kind in ("message", "smessage"):
            self._on_message(channel, message["data"])
        elif kind in ("subscribe", "ssubscribe"):
            self._confirm(channel)

    def _refuse(self, error: Exception) -> None:
        """The server refused a SUBSCRIBE: fail every subscription not confirmed yet (the one
        command in flight carried them), instead of leaving its callers to time out."""
        for channel, event in list(self._confirmed.items()):
            if not event.is_set():
                self._refused[channel] = error
                del self._confirmed[channel]
                for node in self._nodes.values():
                    if isinstance(node, _DirectNode):
                        node.channels.pop(channel, None)
                event.set()

    def _confirm(self, channel: str) -> None:
        """The server confirmed a subscription to `channel`: the first time, wake the callers
        waiting for it; after a reconnect, report it through `on_resubscribed`."""
        confirmed = self._confirmed.get(channel)
        if confirmed is None:
            return
        if confirmed.is_set():
            logger.info("Redis pub/sub resubscribed to %s after a reconnect", channel)
            self._on_resubscribed(channel)
        else:
            confirmed.set()

    async def close(self) -> None:
        """Stop the readers and close the pub/sub connections.

        Callers still waiting for a confirmation fail with redis-py's ``ConnectionError``.
        """
        self._closed = True
        nodes, self._nodes = list(self._nodes.values()), {}
        confirmed, self._confirmed = list(self._confirmed.values()), {}
        for event in confirmed:
            event.set()  # wakes the waiting callers, who then see `_closed`
        for node in nodes:
            if isinstance(node, _DirectNode):
                await node.aclose()
                continue
            if node.reader is not None:
                node.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await node.reader
            with contextlib.suppress(Exception):
                await node.pubsub.aclose()
            if node.own_client is not None:
                with contextlib.suppress(Exception):
                    await node.own_client.aclose()
