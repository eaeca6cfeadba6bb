"""The live stream: one WebSocket per page, fed by the event streams of the queues it shows.

The page subscribes with the cursor of the last event it saw in each queue; the server follows
each queue's stream right after it (`Storage.follow_events`, push-driven), so a page that
reconnects (the server restarted, the network dropped) misses nothing and sees nothing twice.
Events go out in batches: the first event waits at most `BATCH_WINDOW_S` for company, and a
message holds at most `BATCH_MAX` events. Each batch carries the queues' cursors, also for the
events a filter (``tasks``, ``flow_id``) kept from the page. With ``stats``, the queues' counts
are pushed every `STATS_EVERY_S`. The protocol is in WEB_API.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import anyio
import msgspec
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.websockets import WebSocket, WebSocketDisconnect

from .._app import QueueTasks
from .._message import Event
from ..abc import LATEST
from ._shapes import event_data

__all__ = ["BATCH_MAX", "BATCH_WINDOW_S", "LiveStream", "Subscription"]

BATCH_WINDOW_S: Final = 0.05
BATCH_MAX: Final = 500
STATS_EVERY_S: Final = 1.0
#: Events read ahead per queue before the socket catches up (backpressure beyond that).
_AHEAD: Final = 2 * BATCH_MAX

_encoder = msgspec.json.Encoder(enc_hook=repr)


class BadSubscription(ValueError):
    """A subscribe message the server cannot follow (the page is told why)."""


@dataclass(frozen=True)
class Subscription:
    """What a page follows: a cursor per queue (None: from the oldest kept event; `LATEST`:
    from now on), an optional filter by task ids or flow id, and whether to push counts."""

    cursors: dict[str, str | None]
    tasks: frozenset[str] | None = None
    flow_id: str | None = None
    stats: bool = False

    @classmethod
    def parse(cls, message: Any) -> Subscription:
        """A subscribe message, checked.

        Raises:
            BadSubscription: it is not one.
        """
        if not isinstance(message, dict) or message.get("type") != "subscribe":
            raise BadSubscription('expected {"type": "subscribe", "queues": {...}}')
        queues = message.get("queues")
        if not isinstance(queues, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in queues.items()
        ):
            raise BadSubscription('"queues" must map queue names to cursors (a string or null)')
        tasks = message.get("tasks")
        if tasks is not None and not (
            isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)
        ):
            raise BadSubscription('"tasks" must be a list of task ids')
        flow_id = message.get("flow_id")
        if flow_id is not None and not isinstance(flow_id, str):
            raise BadSubscription('"flow_id" must be a string')
        return cls(
            cursors=dict(queues),
            tasks=None if tasks is None else frozenset(tasks),
            flow_id=flow_id,
            stats=bool(message.get("stats", False)),
        )

    def shows(self, event: Event) -> bool:
        """Whether the page wants `event` (its cursor advances either way)."""
        if self.tasks is not None and event.task_id not in self.tasks:
            return False
        return self.flow_id is None or event.flow_id == self.flow_id


class LiveStream:
    """The WebSocket route over one app."""

    def __init__(self, app: QueueTasks) -> None:
        self.app = app

    async def serve(self, websocket: WebSocket) -> None:
        """Serve one page's socket until it goes."""
        await websocket.accept()
        socket = _Socket(websocket)
        try:
            subscription = await socket.next_subscription()
            while subscription is not None:
                subscription = await self._serve(socket, subscription)
        except WebSocketDisconnect:
            return

    async def _serve(self, socket: _Socket, subscription: Subscription) -> Subscription | None:
        """Send what `subscription` follows until the page subscribes again (returned) or
        goes (None)."""
        await self.app.lifecycle.ensure_open()
        try:
            cursors = await self._resolved(subscription.cursors)
        except ValueError as exc:
            await socket.send({"type": "error", "error": "bad_request", "message": str(exc)})
            return await socket.next_subscription()
        await socket.send({"type": "events", "events": [], "cursors": cursors})
        send, receive = anyio.create_memory_object_stream[Event](_AHEAD)
        async with anyio.create_task_group() as tg:
            self._start_followers(tg, cursors, send)
            tg.start_soon(_forward, socket, subscription, receive)
            if subscription.stats:
                tg.start_soon(self._push_stats, socket, list(cursors))
            following = await socket.next_subscription()
            tg.cancel_scope.cancel()
        return following

    async def _resolved(self, cursors: dict[str, str | None]) -> dict[str, str | None]:
        """`LATEST` replaced by each queue's newest cursor now, so the page can resume from
        it even before an event arrives; every other cursor checked by a read of one event.

        Raises:
            ValueError: a cursor is not one of this backend's.
        """
        storage = self.app.storage
        resolved: dict[str, str | None] = {}
        for queue, cursor in cursors.items():
            if cursor == LATEST:
                resolved[queue] = await storage.latest_cursor(queue)
                continue
            if cursor is not None:
                await storage.read_events(queue, after=cursor, limit=1)
            resolved[queue] = cursor
        return resolved

    def _start_followers(
        self, tg: TaskGroup, cursors: dict[str, str | None], send: MemoryObjectSendStream[Event]
    ) -> None:
        for queue, cursor in cursors.items():
            tg.start_soon(self._follow, queue, cursor, send.clone())
        send.close()

    async def _follow(
        self, queue: str, cursor: str | None, send: MemoryObjectSendStream[Event]
    ) -> None:
        async with send:
            async for event in self.app.storage.follow_events(queue, after=cursor):
                await send.send(event)

    async def _push_stats(self, socket: _Socket, queues: list[str]) -> None:
        while True:
            now = self.app.clock.time()
            stats = await self.app.broker.stats(queues, now=now)
            await socket.send(
                {"type": "stats", "queues": [msgspec.to_builtins(s) for s in stats], "at": now}
            )
            await anyio.sleep(STATS_EVERY_S)


async def _forward(
    socket: _Socket, subscription: Subscription, receive: MemoryObjectReceiveStream[Event]
) -> None:
    """Send the followed events in batches, with each queue's cursor after the batch."""
    async with receive:
        async for first in receive:
            await anyio.sleep(BATCH_WINDOW_S)  # a batching window, not a wait for a state
            batch = [first]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            await socket.send(_batch(batch, subscription))


def _batch(events: list[Event], subscription: Subscription) -> dict[str, Any]:
    cursors = {event.queue: event.cursor for event in events}
    shown = [event_data(e) for e in events if subscription.shows(e)]
    return {"type": "events", "events": shown, "cursors": cursors}


class _Socket:
    """A WebSocket whose sends never interleave (events and counts go from two tasks)."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._lock = anyio.Lock()
        self.closed = False

    async def send(self, message: dict[str, Any]) -> None:
        """Send `message`; once the page has gone, drop it (the receiving side sees the close
        and ends the subscription)."""
        async with self._lock:
            if self.closed:
                return
            try:
                await self.websocket.send_text(_encoder.encode(message).decode())
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True

    async def next_subscription(self) -> Subscription | None:
        """The page's next valid subscribe message (a bad one is answered with an error and
        skipped); None when the page has gone."""
        while True:
            try:
                raw = await self.websocket.receive_text()
            except WebSocketDisconnect:
                return None
            try:
                return Subscription.parse(msgspec.json.decode(raw))
            except (BadSubscription, msgspec.DecodeError) as exc:
                await self.send({"type": "error", "error": "bad_request", "message": str(exc)})
