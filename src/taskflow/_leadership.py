"""Leader election: `Leadership` (what ``app.leadership(role)`` returns), `HeldTerms` (the
terms of one app, for ``app.leading``) and `check_role`.

A `Leadership` campaigns for a named role - a lease of the app's `Coordination`, the same on
every backend - until it holds it, keeps it renewed while its ``async with`` block runs
(`RenewedBlock`, shared with ``app.lock``), gives it up when the block ends, and cancels the
block with `LeadershipLost` when the role is lost. Exactly one candidate holds a role at a
time; each new holder gets a higher fencing token.

What does not live here: the lease rules (`taskflow.abc.Coordination` and the backends), the
Supervisor's use of a role (``supervisor/_leader.py``), reading the holder
(`QueueTasks.leader_of`).
"""

from __future__ import annotations

import logging
import math
from types import TracebackType
from typing import Any, Final, Protocol

from ._clock import Clock
from ._exceptions import InvalidOption, LeadershipLost, LifecycleError
from ._fencing import fenced_set
from ._lifecycle import AppLifecycle
from ._locking import LockWaiters
from ._renewal import RenewedBlock
from .abc import Coordination

__all__ = [
    "MAX_CAMPAIGN_RETRY_S",
    "HeldTerms",
    "Leadership",
    "check_leadership_ttl",
    "check_role",
]

logger = logging.getLogger("taskflow.leaders")

#: The longest wait between two tries of a campaign (it is also capped to a tenth of the ttl).
MAX_CAMPAIGN_RETRY_S: Final = 1.0
#: A campaign that saw the holder's lease end at T tries again this long after T.
AFTER_EXPIRY_S: Final = 0.002
MAX_ROLE_LENGTH: Final = 200


def check_role(role: Any) -> str:
    """Return `role` if it can name a role: a non-empty `str` of at most 200 characters
    without NUL.

    Raises:
        InvalidOption: saying which rule the role broke.
    """
    if not isinstance(role, str) or not role or len(role) > MAX_ROLE_LENGTH or "\x00" in role:
        raise InvalidOption(
            f"a role must be a non-empty str of at most {MAX_ROLE_LENGTH} characters without "
            f'NUL, got {role!r}: e.g. app.leadership("generator")'
        )
    return role


def check_leadership_ttl(ttl: object) -> float:
    """Return `ttl` as seconds if it can be a role's lease: a number > 0.

    Raises:
        InvalidOption: it cannot.
    """
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise InvalidOption(
            f"a leadership's ttl must be a number of seconds > 0, got {ttl!r}: "
            'e.g. app.leadership("generator", ttl=2)'
        )
    return float(ttl)


class HeldTerms:
    """The terms of one app that are inside their ``async with`` block (held, or being lost)."""

    def __init__(self) -> None:
        self._terms: set[Leadership] = set()

    def add(self, term: Leadership) -> None:
        self._terms.add(term)

    def discard(self, term: Leadership) -> None:
        self._terms.discard(term)

    def roles(self) -> frozenset[str]:
        """The roles held now (`Leadership.is_held`)."""
        return frozenset(term.role for term in self._terms if term.is_held)


class LeaderApp(Protocol):
    """What a `Leadership` uses of its app (a `QueueTasks`)."""

    coordination: Coordination
    clock: Clock
    lifecycle: AppLifecycle
    lock_waiters: LockWaiters
    held_terms: HeldTerms


class Leadership:
    """A named role, held by one candidate at a time, for the duration of an ``async with``
    block. Made by `QueueTasks.leadership` (or held already by `QueueTasks.try_leadership`):

    ```python
    async with app.leadership("generator") as term:
        while True:
            await generate(fencing_token=term.token)
    ```

    **Campaigning.** Entering tries to take the role's lease. While another candidate holds
    it, the campaign tries again every tenth of `ttl_s` (at most every second), and also just
    after the holder's lease is due to end (read with each try): a free role is taken at the
    next try, within a tenth of `ttl_s` at most, and a role whose holder died (its lease not
    renewed) is taken about `ttl_s` after its last renewal, within a few milliseconds on one
    host. A backend error while campaigning is raised from the ``async with``.

    **Holding.** While the block runs, the role is renewed every third of `ttl_s`. If a
    renewal says the lease lapsed and was taken (the process was paused past the lease), or no
    renewal succeeded before the lease ran out (the store unreachable, or not answering), the
    block is cancelled and `LeadershipLost` is raised from the ``async with``.

    **Leaving.** The role is given up when the block ends, also on an error or cancellation,
    so another candidate takes it at its next try; set `release_on_exit` to False to leave
    it to lapse instead (what a crash does; used by tests and demos).

    A `Leadership` is entered once; call `QueueTasks.leadership` again for another term.

    Attributes:
        role: The role's name (the name of its lease in the backend).
        owner: This candidate's owner id, unique to it (what `QueueTasks.leader_of` shows).
        ttl_s: The lease of the role: a holder that stops renewing (killed, paused) loses the
            role after at most this long.
        release_on_exit: Give the role up when the block ends (default True).
    """

    def __init__(
        self, app: LeaderApp, role: str, *, ttl_s: float, owner: str | None = None
    ) -> None:
        self.role = check_role(role)
        self.ttl_s = ttl_s
        self.owner = owner if owner is not None else app.lock_waiters.new_owner()
        self.release_on_exit = True
        self._app = app
        self._token: int | None = None
        self._expires_at = 0.0
        self._entered = False
        self._left = False
        self._block = RenewedBlock(
            f"role {self.role!r}", clock=app.clock, ttl_s=ttl_s, renew_s=ttl_s / 3, logger=logger
        )

    @property
    def token(self) -> int:
        """The fencing token of this term: greater than any earlier holder's of the role.
        Pass it with the writes the leader makes, so they can refuse an older leader's.

        Raises:
            LifecycleError: the role is not held yet.
        """
        if self._token is None:
            raise LifecycleError(
                f"role {self.role!r} is not held yet: read term.token inside "
                f"`async with app.leadership({self.role!r}) as term:`"
            )
        return self._token

    @property
    def is_held(self) -> bool:
        """True if this candidate holds the role now, as far as it can tell without asking
        the store: taken, not lost, not left, and its last successful renewal's lease has not
        run out by the app's clock (so a process resumed after a pause past its lease sees
        False at once, before its next renewal says so). Ask the store with
        `QueueTasks.leader_of`."""
        if self._token is None or self._block.lost is not None or self._left:
            return False
        return self._app.clock.time() < self._expires_at

    async def fenced_set(self, namespace: str, key: str, value: bytes) -> bool:
        """Write a fenced record of the backend's key-value space, fenced by this term's
        token: refused (False) once a later holder of any role or lock with a higher token
        has written the record, so a leader resumed after losing its role cannot overwrite
        its successor's state. Read it back with `QueueTasks.fenced_get`.

        The store decides, not this process: a write made before the successor's first write
        to the record passes (it came first). Records written this way hold the value with
        the token; write them only through `fenced_set`.

        Raises:
            LifecycleError: the role is not held yet.
        """
        return await fenced_set(self._app.coordination, namespace, key, value, token=self.token)

    # -- campaigning -----------------------------------------------------------------------

    async def try_take(self) -> bool:
        """Try once to take the role; True if this candidate holds it now."""
        await self._app.lifecycle.ensure_open()
        return await self._try() is None

    async def _try(self) -> float | None:
        """One try: None if the role is held now, else how long to wait before the next."""
        app = self._app
        now = app.clock.time()
        token = await app.coordination.acquire_lease(
            self.role, self.owner, ttl_s=self.ttl_s, now=now
        )
        if token is not None:
            self._token, self._expires_at = token, now + self.ttl_s
            return None
        retry_s = min(MAX_CAMPAIGN_RETRY_S, self.ttl_s / 10)
        holder = await app.coordination.get_lease(self.role, now=now)
        if holder is None:  # released or lapsed since: try again at once
            return 0.0
        return max(0.0, min(retry_s, holder.expires_at - now + AFTER_EXPIRY_S))

    async def _campaign(self) -> None:
        while (wait_s := await self._try()) is not None:
            await self._app.clock.sleep(wait_s)

    # -- holding ---------------------------------------------------------------------------

    async def __aenter__(self) -> Leadership:
        if self._entered:
            raise LifecycleError(
                f"this app.leadership({self.role!r}) was already entered; "
                "call app.leadership() again"
            )
        self._entered = True
        await self._app.lifecycle.ensure_open()
        if self._token is None:
            await self._campaign()
        logger.info("%s leads role %r (token %d)", self.owner, self.role, self._token)
        self._block.start(self._renew, expires_at=self._expires_at)
        self._app.held_terms.add(self)
        return self

    async def _renew(self, now: float) -> bool:
        ok = await self._app.coordination.renew_lease(
            self.role, self.owner, self.token, ttl_s=self.ttl_s, now=now
        )
        if ok:
            self._expires_at = now + self.ttl_s
        return ok

    # -- leaving ---------------------------------------------------------------------------

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lost = await self._block.leave(self._leave(), exc_type)
        if lost is None:
            return
        logger.warning("%s lost role %r: %s", self.owner, self.role, lost)
        raise LeadershipLost(self.role, self.owner, self.token, lost) from exc

    async def _leave(self) -> None:
        self._left = True
        self._app.held_terms.discard(self)
        await self._block.stop()
        if self._block.lost is None and self.release_on_exit:
            try:
                await self._app.coordination.release_lease(self.role, self.owner, self.token)
            except Exception as exc:  # unreleased, it lapses after ttl_s
                logger.warning("could not give role %r up (it lapses): %r", self.role, exc)

    def __repr__(self) -> str:
        state = "held" if self.is_held else "lost" if self._block.lost else "not held"
        return f"<Leadership {self.role!r} owner={self.owner!r} {state}>"
