"""One shared pub/sub listener per storage (so per process), for result waiters and idle workers.

Scripts publish a task id on its queue's ``done`` channel when the task reaches a terminal state,
and ``1`` on the queue's ``work`` channel when new work becomes claimable. This listener keeps one
subscription per channel, whatever the number of waiters, on one connection per server (a Redis
Cluster shards channels by hash slot, so there is one connection per node that owns a queue's
slot, subscribed with SSUBSCRIBE).

`subscribe` returns only once the server confirmed the subscription, so a caller that subscribes
and then reads the stored state cannot miss a notification sent in between. When a connection
drops, redis-py reconnects and resubscribes; the server then confirms each channel again, and the
listener reports that through `on_resubscribed` so the storage can re-read what it may have
missed while disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.crc import key_slot

__all__ = ["Listener"]

logger = logging.getLogger("taskflow.redis")

_CONFIRM_TIMEOUT_S = 10.0
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 2.0
_SUBSCRIBE_ATTEMPTS = 8


class _NodeSubscription:
    """The pub/sub connection to one server and the task reading from it."""

    def __init__(self, pubsub: Any, own_client: Any | None) -> None:
        self.pubsub = pubsub
        self.own_client = own_client
        self.reader: asyncio.Task[None] | None = None


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
        self._nodes: dict[str, _NodeSubscription] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._lock = asyncio.Lock()

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
            for channel in new:
                self._confirmed[channel] = asyncio.Event()
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
        pending = [self._confirmed[c].wait() for c in wanted if not self._confirmed[c].is_set()]
        if pending:
            try:
                await asyncio.wait_for(asyncio.gather(*pending), _CONFIRM_TIMEOUT_S)
            except TimeoutError:
                logger.warning(
                    "Redis did not confirm subscriptions to %s within %.0f s; carrying on "
                    "(waiters fall back to their own timeouts)",
                    wanted,
                    _CONFIRM_TIMEOUT_S,
                )

    def _by_slot(self, channels: list[str]) -> list[list[str]]:
        if not self._sharded:
            return [channels]
        groups: dict[int, list[str]] = {}
        for channel in channels:
            groups.setdefault(key_slot(channel.encode()), []).append(channel)
        return list(groups.values())

    async def _send_subscribe(self, channels: list[str]) -> None:
        """(S)SUBSCRIBE `channels` (one hash slot) on their node, retrying while it reconnects."""
        node = self._node_for(channels[0])
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

    def _node_for(self, channel: str) -> _NodeSubscription:
        if not self._sharded:
            name = "single"
            if name not in self._nodes:
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
            confirmed = self._confirmed.get(channel)
            if confirmed is None:
                return
            if confirmed.is_set():
                logger.info("Redis pub/sub resubscribed to %s after a reconnect", channel)
                self._on_resubscribed(channel)
            else:
                confirmed.set()

    async def close(self) -> None:
        """Stop the readers and close the pub/sub connections."""
        nodes, self._nodes = list(self._nodes.values()), {}
        self._confirmed.clear()
        for node in nodes:
            if node.reader is not None:
                node.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await node.reader
            with contextlib.suppress(Exception):
                await node.pubsub.aclose()
            if node.own_client is not None:
                with contextlib.suppress(Exception):
                    await node.own_client.aclose()
