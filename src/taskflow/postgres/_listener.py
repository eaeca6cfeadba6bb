"""The PostgreSQL backend's push channel: one LISTEN connection per storage, and its payloads.

What lives here: `Listener` (connect and LISTEN, notice a lost connection, a silent one too,
reconnect with backoff) and the shape of a payload (`Notification`, `PushedDone`). The
statements that send the notifications (``_sql_broker.py``, ``_sql_storage.py``) write what
this module reads:

* ``t:<id>,<id>...``: tasks that reached a terminal state;
* ``d:<item>,<item>...``: done tasks with their small result, each item
  ``<result expiry>;<base64 result>;<id>`` (`PushedDone`);
* ``w:<queue>,<queue>...``: queues with new or rescheduled work (claimable now or later);
* ``e:<queue>,<queue>...``: queues with new events.

What does not live here: what a notification wakes (the storage hands ends to its result
waiters and queues to `Wakeups`), and the connection's settings (``_client.py``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, NamedTuple

from ..abc import TaskOutcome, TaskStatus
from ._client import Backoff, is_transient

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "DONE",
    "ENDED",
    "EVENTS",
    "WORK",
    "Listener",
    "Notification",
    "PushedDone",
]

logger = logging.getLogger("taskflow.postgres")

#: The kinds of notification (the letter before the colon).
ENDED: Final = "t"
DONE: Final = "d"
WORK: Final = "w"
EVENTS: Final = "e"

#: How often the listener checks that its connection still answers, and how long it waits for
#: the answer: a connection lost without a word (a dead host, a network partition) shows no other
#: way, and while it lasts no notification arrives.
CHECK_EVERY_S: Final = 5.0
ANSWER_WITHIN_S: Final = 2.0


class Notification(NamedTuple):
    """One NOTIFY payload: its kind (`ENDED`, `DONE`, `WORK`, `EVENTS`) and its items."""

    kind: str
    items: list[str]

    @classmethod
    def parse(cls, payload: str) -> Notification:
        """Read ``<kind>:,item,item...`` (items are never empty)."""
        kind, _, body = payload.partition(":")
        return cls(kind, [item for item in body.split(",") if item])


class PushedDone(NamedTuple):
    """One item of a `DONE` notification: a done task and its small result."""

    result_expires_at: str  # seconds since the epoch, or "" for none
    result: str  # base64, or "" for none
    task_id: str

    @classmethod
    def parse(cls, item: str) -> PushedDone:
        """Read ``<result expiry>;<base64 result>;<id>``."""
        expires, result, task_id = item.split(";", 2)
        return cls(expires, result, task_id)

    def outcome(self) -> TaskOutcome:
        """What it tells a result waiter: the whole outcome, so it reads nothing."""
        return TaskOutcome(
            id=self.task_id,
            status=TaskStatus.DONE,
            result=base64.b64decode(self.result) if self.result else None,
            result_expires_at=float(self.result_expires_at) if self.result_expires_at else None,
        )


class Listener:
    """One LISTEN connection on `channel`, re-established with backoff when it is lost.

    Args:
        connect: Opens a new connection (the listener closes it).
        channel: The channel to LISTEN on.
        on_notification: Called with each notification heard, on the event loop thread.
        on_lost: Called when the connection is found lost: ends may go unheard from now on.
        on_back: Called once the connection is back: what was sent meanwhile is lost.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection[asyncpg.Record]]],
        channel: str,
        *,
        on_notification: Callable[[Notification], None],
        on_lost: Callable[[], None],
        on_back: Callable[[], None],
    ) -> None:
        self._connect_new = connect
        self._channel = channel
        self._on_notification = on_notification
        self._on_lost = on_lost
        self._on_back = on_back
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: How many times the LISTEN connection was (re-)established.
        self.generation = 0

    async def ensure_started(self) -> None:
        """Connect and LISTEN (once); later calls return at once."""
        if self._supervisor is not None:
            return
        async with self._lock:
            if self._supervisor is None:
                await self._connect()
                self._supervisor = asyncio.create_task(
                    self._supervise(), name="taskflow-postgres-listener"
                )

    @property
    def connected(self) -> bool:
        """Whether notifications are being heard right now."""
        conn = self._conn
        return conn is not None and not self._lost.is_set() and not conn.is_closed()

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
            self._supervisor = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except Exception:  # a dead connection cannot say goodbye; drop it
                conn.terminate()

    async def _connect(self) -> None:
        conn = await self._connect_new()
        try:
            await conn.add_listener(self._channel, self._heard)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._terminated)
        self._conn = conn
        self._lost.clear()
        self.generation += 1

    def _heard(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._on_notification(Notification.parse(str(payload)))

    def _terminated(self, conn: object) -> None:
        if conn is self._conn:  # not an old connection we already replaced
            self._lost.set()
            self._on_lost()

    async def _supervise(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), CHECK_EVERY_S)
            except TimeoutError:
                pass
            if not self._lost.is_set() and await self._answers():
                continue
            logger.warning("LISTEN connection lost; reconnecting")
            await self._reconnect()

    async def _answers(self) -> bool:
        """Whether the listening connection still answers a query in time."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            await asyncio.wait_for(conn.execute("SELECT 1"), ANSWER_WITHIN_S)
        except Exception:  # no answer in time, or the connection broke while asking
            return False
        return True

    async def _reconnect(self) -> None:
        self._on_lost()
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        backoff = Backoff()
        while True:
            try:
                await self._connect()
            except Exception as exc:
                if not is_transient(exc):
                    logger.exception("LISTEN reconnect failed; retrying")
                await backoff.sleep()
                continue
            logger.info("LISTEN connection re-established")
            # Notifications sent while we were away are lost: wake everyone who might care.
            self._on_back()
            return
