"""`DeadlineSweep`: one timer per worker that interrupts runs past their `timeout`.

A heap of (deadline, run) and one loop that sleeps until the earliest deadline, instead of a
cancel scope per task. A run that has left its sub-worker by its deadline is skipped. What does
not live here: what an interrupted run's outcome is (`_outcome.py`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from typing import NamedTuple

from ._aio import first_of
from ._clock import Clock
from ._run import Run

__all__ = ["DeadlineSweep"]

logger = logging.getLogger("taskflow.worker")


class _Deadline(NamedTuple):
    """A heap entry: ordered by `at`, then by `seq` (so runs are never compared)."""

    at: float
    seq: int
    run: Run


class DeadlineSweep:
    """Interrupts each run added with a deadline once the deadline passes (if still running)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[_Deadline] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()

    def add(self, run: Run, deadline: float) -> None:
        """Interrupt `run` ("timeout") if it is still running at `deadline` (clock time)."""
        heap = self._heap
        earliest = heap[0].at if heap else None
        heapq.heappush(heap, _Deadline(deadline, next(self._seq), run))
        if earliest is None or deadline < earliest:
            self._changed.set()

    async def loop(self) -> None:
        """Sweep until cancelled."""
        heap = self._heap
        while True:
            self._changed.clear()
            now = self._clock.time()
            while heap and heap[0].at <= now:
                run = heapq.heappop(heap).run
                if run.started:
                    logger.warning("task %s exceeded its timeout; interrupting it", run.task_id)
                    run.interrupt("timeout")
            if heap:
                await first_of(self._clock.sleep(heap[0].at - now), self._changed.wait())
            else:
                await self._changed.wait()
