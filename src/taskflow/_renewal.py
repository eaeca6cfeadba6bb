"""`RenewedBlock`: a lease held for an ``async with`` block, renewed in the background, whose
loss cancels the block.

Shared by ``app.lock`` (`AppLock`, ``_locking.py``) and ``app.leadership`` (`Leadership`,
``_leadership.py``): both take something with a lease from the app's `Coordination`, renew it
every `renew_s` while the block runs, and when a renewal says it is gone - or none succeeded
before the lease ran out - cancel the task running the block, so that its ``__aexit__`` can
raise its own "lost" error (`LockLost`, `LeadershipLost`).

What does not live here: taking and releasing (each caller's, with its own backend calls), the
errors raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ._aio import first_of, shielded
from ._clock import Clock

__all__ = ["Renew", "RenewedBlock"]

Renew = Callable[[float], Awaitable[bool]]
"""One renewal at time ``now``: True if still held, False if it lapsed and is gone."""


class RenewedBlock:
    """The renewal of one held lease and the block it guards.

    Args:
        what: How log lines and the cancellation name the thing held (``"lock 'r'"``).
        clock: The app's clock (renewals are spaced and timed out on it).
        ttl_s: The lease: how long a successful renewal keeps it.
        renew_s: The time between two renewals (a fraction of `ttl_s`).
        logger: Where failed renewals are logged.

    Attributes:
        lost: Why the lease counts as lost, once it does (None while held or not yet taken).
    """

    def __init__(
        self, what: str, *, clock: Clock, ttl_s: float, renew_s: float, logger: logging.Logger
    ) -> None:
        self.what = what
        self._clock = clock
        self._ttl_s = ttl_s
        self._renew_s = renew_s
        self._logger = logger
        self._host: asyncio.Task[object] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self.lost: str | None = None

    @property
    def running(self) -> bool:
        """True while the renewal runs (from `start` to `stop`, unless lost)."""
        return self._renewer is not None and self.lost is None

    def start(self, renew: Renew, *, expires_at: float) -> None:
        """Guard the current task's block: renew with `renew` from now on; the lease taken
        runs until `expires_at` (clock time)."""
        self._host = asyncio.current_task()
        self._renewer = asyncio.get_running_loop().create_task(
            self._renew_while_held(renew, expires_at), name=f"taskflow-renew:{self.what}"
        )

    async def stop(self) -> None:
        """Stop renewing (the block ended) and wait until the renewal has stopped."""
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            await asyncio.wait([renewer])

    async def leave(
        self, leave: Coroutine[Any, Any, None], exc_type: type[BaseException] | None
    ) -> str | None:
        """End the block: run `leave` (release what was held) shielded from cancellation,
        then say why the exit must raise the loss (`raise_loss`), or None if it must not.

        The cancellation the block's own loss sent is absorbed here when it arrives only
        after the block ended; any other cancellation goes on."""
        try:
            await shielded(leave)
        except asyncio.CancelledError:
            if self.lost is None:
                raise
        return (self.lost or "") if self.raise_loss(exc_type) else None

    def raise_loss(self, exc_type: type[BaseException] | None) -> bool:
        """After `stop`: True if the block's exit must raise the loss (the caller's "lost"
        error). False if nothing was lost, or if the block was cancelled from outside as well
        (that cancellation goes on; the loss is only logged)."""
        if self.lost is None:
            return False
        if self._host is not None and self._host.uncancel() > 0 and exc_type is not None:
            self._logger.warning("%s was lost while its holder was being cancelled", self.what)
            return False
        return True

    async def _renew_while_held(self, renew: Renew, expires_at: float) -> None:
        clock = self._clock
        while True:
            await clock.sleep(self._renew_s)
            now = clock.time()
            try:
                ok = await self._renew_in_time(renew, now, expires_at)
            except Exception as exc:
                if clock.time() < expires_at:
                    self._logger.warning("renewing %s failed (retried): %r", self.what, exc)
                    continue
                self._lose(f"it could not be renewed before its lease ran out ({exc!r})")
                return
            if not ok:
                self._lose(
                    "a renewal found it no longer held: its lease lapsed (the holder was "
                    f"paused or cut off for longer than ttl_s={self._ttl_s:g}) and it may have "
                    "been taken by another holder since"
                )
                return
            expires_at = now + self._ttl_s

    async def _renew_in_time(self, renew: Renew, now: float, expires_at: float) -> bool:
        """`renew(now)`, given up (TimeoutError) if it has not answered when the lease runs
        out: a store that hangs counts as unreachable."""
        answers: list[bool] = []

        async def ask() -> None:
            answers.append(await renew(now))

        await first_of(ask(), self._clock.sleep(max(expires_at - now, self._renew_s)))
        if not answers:
            raise TimeoutError("the store did not answer before the lease ran out")
        return answers[0]

    def _lose(self, why: str) -> None:
        self.lost = why
        if self._host is not None:
            self._host.cancel(f"taskflow: {self.what} was lost")
