"""`PoolGrowth`: the PostgreSQL pool grows beside the calls, not on their path.

What lives here: the one policy of when a new pooled connection is opened (by whom, and how
many at once). What does not live here: the pool itself and the calls (``_client.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

__all__ = ["PoolGrowth"]

logger = logging.getLogger("taskflow.postgres")


class PoolGrowth:
    """Grows the pool beside the calls, so that no call waits for a connection to be opened.

    asyncpg opens a connection for a call that finds none idle, on that call's path: a TCP and
    authentication handshake, then the introspection of the array types its first statement
    takes (several milliseconds, tens on a busy host). In a burst, each overlapping call opened
    its own and waited for it, which lengthened the burst and made the next overlap likelier:
    in the latency benchmark the producer's pool went from 1 to 10 connections in 150 ms, and
    those calls made its p99. Here a call that finds every connection busy waits for the first
    to come free (usually within a round trip), while one new connection is opened and warmed
    beside it, and is then there for the next burst; the pool grows one connection at a time
    while the demand lasts. A pool with no connection at all (a restarted server) connects on
    the call's path, as before.
    """

    def __init__(
        self, warm: Callable[[PoolConnectionProxy[asyncpg.Record]], Awaitable[object]]
    ) -> None:
        #: Calls that passed `enter` and have not `leave`-d yet.
        self.in_flight = 0
        self._warm = warm
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._opening: asyncio.Task[None] | None = None
        self._opener_holds = False  # the opener holds a connection (a new one, being warmed)
        self._may_open = True  # False after an opening failed, until a call ends

    async def enter(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        """Before a call acquires a connection of `pool`: if every one is busy, wait for the
        first to come free, and have one more opened beside the calls (one at a time)."""
        while True:
            size = pool.get_size()
            busy = self.in_flight + self._opener_holds
            if busy < size or size == 0 or size >= pool.get_max_size():
                break
            if self._opening is None and self._may_open:
                self._opening = asyncio.create_task(self._open_one(pool))
            turn = asyncio.get_running_loop().create_future()
            self._waiters.append(turn)
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._wake_one()  # given the turn, then cancelled: pass it on
                raise
        self.in_flight += 1

    def leave(self) -> None:
        """After a call handed its connection back: the next waiting call may go."""
        self.in_flight -= 1
        self._may_open = True
        self._wake_one()

    async def close(self) -> None:
        """Stop an opening under way (the pool is closing)."""
        if self._opening is not None:
            self._opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._opening

    async def _open_one(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        try:
            async with pool.acquire() as conn:
                self._opener_holds = True
                await self._warm(conn)
        except Exception:
            self._may_open = False
            logger.debug("opening a pooled connection ahead of need failed", exc_info=True)
        finally:
            self._opener_holds = False
            self._opening = None
            self._wake_one()

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
