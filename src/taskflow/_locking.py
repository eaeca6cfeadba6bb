"""In-code reader/writer locks: `AppLock` (what ``app.lock(...)`` returns) and `LockWaiters`.

An `AppLock` takes a named lock of the app's `Coordination` for the duration of an
``async with`` block: it queues and waits its turn, renews the lock in the background while the
block runs, releases it on exit, and cancels the block with `LockLost` if a renewal finds the
lock lost. `LockWaiters`, one per app, is the in-process registry of the owners waiting: a
release or withdrawal made in this process wakes the owners it granted at once.

What does not live here: the lock rules (`taskflow.abc.Coordination` and the backends), the
locks a task declares (the worker's side), the name rule (``_locknames.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import secrets
import socket
from collections.abc import Iterable
from types import TracebackType
from typing import Final, Protocol

from ._aio import first_of, shielded
from ._clock import Clock
from ._exceptions import InvalidOption, LifecycleError, LockLost
from ._lifecycle import AppLifecycle
from ._locknames import check_lock_name
from ._message import LockHold, LockMode, LockRequest
from ._renewal import RenewedBlock
from .abc import Coordination

__all__ = ["AppLock", "LockWaiters", "check_lock_ttl"]

logger = logging.getLogger("taskflow.locks")

#: The first wait between two requests of a waiting lock, and the longest (capped further to a
#: third of the lock's ttl, so that a waiter's re-requests keep its place in the queue alive).
FIRST_RETRY_S: Final = 0.01
MAX_RETRY_S: Final = 1.0


def check_lock_ttl(ttl: object) -> float:
    """Return `ttl` as seconds if it can be a lock's lease: a number > 0.

    Raises:
        InvalidOption: it cannot.
    """
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise InvalidOption(
            f"a lock's ttl must be a number of seconds > 0, got {ttl!r}: "
            'e.g. app.lock("dwh.sales", ttl=60)'
        )
    return float(ttl)


class LockWaiters:
    """The owners of this process waiting for a lock, each with the event that wakes it.

    Owner ids are unique per holder: this process's id (host, pid, a random part) and a
    counter, so two `AppLock`s never share an owner, here or on another host.
    """

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._process = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._counter = itertools.count(1)

    def new_owner(self) -> str:
        """A fresh owner id, used by one holder only."""
        return f"{self._process}:{next(self._counter)}"

    def add(self, owner: str) -> asyncio.Event:
        """Register `owner` as waiting; its event is set when a local call grants it."""
        event = self._events[owner] = asyncio.Event()
        return event

    def discard(self, owner: str) -> None:
        """`owner` stopped waiting."""
        self._events.pop(owner, None)

    def wake(self, owners: Iterable[str]) -> None:
        """Wake the waiting owners among `owners` (those a release or withdrawal granted);
        the others are not waiting here (a parked task, another process) and are ignored."""
        for owner in owners:
            event = self._events.get(owner)
            if event is not None:
                event.set()


class LockApp(Protocol):
    """What an `AppLock` uses of its app (a `QueueTasks`)."""

    coordination: Coordination
    clock: Clock
    lifecycle: AppLifecycle
    lock_waiters: LockWaiters


class AppLock:
    """A reader/writer lock held for the duration of an ``async with`` block.

    Made by `QueueTasks.lock`:

    ```python
    async with app.lock("dwh.sales", shared=True) as lock:
        rows = await read_table("dwh.sales", fencing_token=lock.token)
    ```

    **Waiting.** Entering requests the lock; if it is not free, the request joins the lock's
    queue (writers are not starved: see the docs' Locks page) and the block waits its turn. It
    does not spin: a release or withdrawal made by this process (another `AppLock` of the app
    leaving its block) wakes the owners it granted at once, through the app's `LockWaiters`;
    a grant made by another process is noticed by requesting again, after 10 ms, then twice as
    long each time up to 1 s (or a third of `ttl_s`, if shorter). Each of those requests also
    keeps the queued request alive (a queued request lapses after `ttl_s` unless refreshed, so
    a waiter that died leaves the queue by itself).

    **Holding.** While the block runs, the lock is renewed every third of `ttl_s` (every
    `heartbeat_s` with the default ttl, the worker's lease settings). If a renewal finds the
    lock lost - the process was paused past the lease and the lock lapsed, maybe to another
    holder - the block is cancelled and `LockLost` is raised from the ``async with``. A
    renewal that fails on a backend error is retried at the next beat; the lock counts as
    lost once its lease has run out without one succeeding.

    **Leaving.** The lock is released when the block ends, also on an error or cancellation
    (the release is shielded from a second cancellation). Cancelled while waiting, the request
    is withdrawn from the queue (and a grant that came meanwhile is given back).

    An `AppLock` is entered once; call `QueueTasks.lock` again for another turn.

    Attributes:
        name: The lock's name.
        mode: `LockMode.SHARED` or `LockMode.EXCLUSIVE`.
        owner: This holder's owner id, unique to it (as `taskflow locks` shows it).
        ttl_s: The lease of the hold and of the queued request, renewed while held.
    """

    def __init__(
        self, app: LockApp, name: str, *, shared: bool, ttl_s: float, renew_s: float
    ) -> None:
        self.name = check_lock_name(name)
        self.mode = LockMode.SHARED if shared else LockMode.EXCLUSIVE
        self.ttl_s = ttl_s
        self._app = app
        self.owner = app.lock_waiters.new_owner()
        self._token: int | None = None
        self._entered = False
        self._block = RenewedBlock(
            f"lock {self.name!r}", clock=app.clock, ttl_s=ttl_s, renew_s=renew_s, logger=logger
        )
        self._expires_at = 0.0

    @property
    def token(self) -> int:
        """The fencing token of this hold: greater than any earlier holder's of this lock.
        Pass it with writes guarded by the lock, so they can refuse an older holder's.

        Raises:
            LifecycleError: the lock has not been granted yet.
        """
        if self._token is None:
            raise LifecycleError(
                f"lock {self.name!r} is not held yet: read lock.token inside "
                f"`async with app.lock({self.name!r}) as lock:`"
            )
        return self._token

    @property
    def held(self) -> bool:
        """True while the block runs with the lock (False before, after, and once lost)."""
        return self._token is not None and self._block.running

    # -- entering --------------------------------------------------------------------------

    async def __aenter__(self) -> AppLock:
        if self._entered:
            raise LifecycleError(
                f"this app.lock({self.name!r}) was already entered; call app.lock() again"
            )
        self._entered = True
        await self._app.lifecycle.ensure_open()
        waiters = self._app.lock_waiters
        woken = waiters.add(self.owner)
        try:
            self._token = await self._wait_turn(woken)
        except BaseException:  # cancelled (or the backend failed) while waiting
            with contextlib.suppress(Exception):  # the wait's own error is the one to raise
                await shielded(self._withdraw())
            raise
        finally:
            waiters.discard(self.owner)
        self._block.start(self._renew, expires_at=self._expires_at)
        return self

    async def _request(self) -> int | None:
        request = LockRequest(self.name, self.owner, self.mode)
        now = self._app.clock.time()
        [token] = await self._app.coordination.acquire_locks([request], ttl_s=self.ttl_s, now=now)
        self._expires_at = now + self.ttl_s  # of the hold if granted (a request renews it)
        return token

    async def _wait_turn(self, woken: asyncio.Event) -> int:
        retry_s = FIRST_RETRY_S
        max_retry_s = min(MAX_RETRY_S, self.ttl_s / 3)
        while True:
            woken.clear()  # a wake-up from now on is seen by the wait below
            token = await self._request()
            if token is not None:
                return token
            await first_of(woken.wait(), self._app.clock.sleep(retry_s))
            retry_s = min(retry_s * 2, max_retry_s)

    async def _withdraw(self) -> None:
        app = self._app
        request = LockRequest(self.name, self.owner, self.mode)
        granted = await app.coordination.withdraw_lock_requests(
            [request], ttl_s=self.ttl_s, now=app.clock.time()
        )
        app.lock_waiters.wake(granted)

    # -- holding ---------------------------------------------------------------------------

    async def _renew(self, now: float) -> bool:
        hold = LockHold(self.name, self.owner, self.token)
        [ok] = await self._app.coordination.renew_locks([hold], ttl_s=self.ttl_s, now=now)
        return ok

    # -- leaving ---------------------------------------------------------------------------

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        lost = await self._block.leave(self._leave(), exc_type)
        if lost is None:
            return False
        raise LockLost(self.name, self.mode, self.token, lost) from exc

    async def _leave(self) -> None:
        await self._block.stop()
        if self._block.lost is None:
            await self._release()

    async def _release(self) -> None:
        app = self._app
        hold = LockHold(self.name, self.owner, self.token)
        granted = await app.coordination.release_locks(
            [hold], ttl_s=self.ttl_s, now=app.clock.time()
        )
        app.lock_waiters.wake(granted)

    def __repr__(self) -> str:
        state = "held" if self.held else "lost" if self._block.lost else "not held"
        return f"<AppLock {self.name!r} {self.mode.value} owner={self.owner!r} {state}>"
