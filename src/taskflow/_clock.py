"""The one time seam: every "now" and every sleep in taskflow goes through a `Clock`.

Due times, lease expiries, retry backoff and TTLs are computed from `Clock.time()` on the caller's
side and passed into the backend contracts, so tests can swap in `taskflow.testing.FakeClock` and
move time without sleeping. The fake clock lives in `taskflow.testing`; this module holds only the
protocol and the real clock.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Where taskflow reads the time and how it waits for time to pass."""

    def time(self) -> float:
        """Return the current wall-clock time in seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait until `seconds` of this clock's time have passed."""
        ...


class SystemClock:
    """The real clock: `time.time()` and `anyio.sleep()`."""

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"
