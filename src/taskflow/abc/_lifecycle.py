"""The open/close life shared by the three contracts (`Storage`, `Broker`, `Coordination`).

One state machine, new -> open -> closed -> open ...: a closed part opens again, on any event
loop (an app reopens its backend on each loop it is used from), and `abandon` lets go of one
whose event loop has ended without awaiting anything. Misuse gets a `LifecycleError` that says
what to do. Each contract adds its own bookkeeping around the backend's ``_open`` / ``_close`` /
``_abandon`` hooks in ``_opening`` / ``_closing`` / ``_abandoning``.

Not to be confused with ``taskflow._lifecycle``, which decides which event loop owns an app.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Self

from .._exceptions import LifecycleError

__all__ = ["Lifecycle"]

logger = logging.getLogger("taskflow.backend")


class Lifecycle:
    """open/close/abandon bookkeeping; subclasses define what opening and closing do."""

    _state: str = "new"

    def _check_open(self) -> None:
        """Raise `LifecycleError` (saying how to open it) unless this part is open."""
        if self._state != "open":
            what = type(self).__name__
            closed = " (it was closed)" if self._state == "closed" else ""
            raise LifecycleError(
                f"{what} is not open{closed}: use it through an app (`async with app:`, or any "
                f"call that needs it opens the app), or call `await {what.lower()}.open()` first"
            )

    @property
    def is_open(self) -> bool:
        """True between `open()` and `close()` (or `abandon()`)."""
        return self._state == "open"

    async def open(self) -> None:
        """Connect if needed; a closed part opens again, on any event loop.

        Raises:
            LifecycleError: it is open already.
        """
        if self._state == "open":
            raise LifecycleError(f"{type(self).__name__} is already open")
        await self._opening()
        self._state = "open"
        logger.debug("%s opened", type(self).__name__)

    async def close(self) -> None:
        """Disconnect. Closing twice is a no-op."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        await self._closing()
        logger.debug("%s closed", type(self).__name__)

    def abandon(self) -> None:
        """Let go of a part whose event loop has ended: mark it closed and drop its connections
        and loop-bound state without awaiting anything, since nothing can run on a loop that no
        longer runs (the garbage collector closes the sockets). `open()` may follow, on another
        loop. A no-op unless open."""
        if self._state != "open":
            return
        self._state = "closed"
        self._abandoning()
        logger.debug("%s abandoned with its event loop", type(self).__name__)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- what each contract does around the backend's hooks ---------------------------------

    async def _opening(self) -> None:
        await self._open()

    async def _closing(self) -> None:
        await self._close()

    def _abandoning(self) -> None:
        self._abandon()

    # -- hooks -----------------------------------------------------------------------------

    async def _open(self) -> None:
        """Hook: connect. Default: nothing."""

    async def _close(self) -> None:
        """Hook: disconnect. Default: nothing."""

    def _abandon(self) -> None:
        """Hook: drop the connections and every object bound to the event loop that ended,
        without awaiting (see `abandon`); `_open` must then work on a new loop. Default:
        nothing."""
