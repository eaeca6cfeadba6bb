"""Helpers for testing code that uses taskflow: a fake clock that moves only when told to.

```python
clock = FakeClock()
app = QueueTasks(name="t", clock=clock)
...
await clock.advance(5)      # every sleeper due within 5 s wakes, in deadline order
```
"""

from __future__ import annotations

import heapq
import itertools

import anyio

__all__ = ["FakeClock"]


class FakeClock:
    """A `Clock` whose time moves only when `advance` (or `set`) is called.

    `sleep` waits until the clock has been advanced past the sleeper's deadline; `sleep(0)` and
    negative sleeps return after one checkpoint.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), event))
        await event.wait()

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, wake every sleeper now due, and let them run."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance({seconds}): time cannot go backwards")
        await self.set(self._now + seconds)

    async def set(self, when: float) -> None:
        """Move time forward to `when` (seconds since the epoch)."""
        if when < self._now:
            raise ValueError(f"FakeClock.set({when}): time cannot go backwards from {self._now}")
        self._now = when
        woke = False
        while self._sleepers and self._sleepers[0][0] <= self._now:
            heapq.heappop(self._sleepers)[2].set()
            woke = True
        if woke:
            await anyio.wait_all_tasks_blocked()

    @property
    def sleepers(self) -> int:
        """How many sleepers are waiting (handy to sequence tests without sleeping)."""
        return sum(1 for _, _, e in self._sleepers if not e.is_set())

    def __repr__(self) -> str:
        return f"FakeClock(time={self._now})"
