"""`Recorder`: the write side of a worker. What its runs produce reaches the backend in batches:
progress and yields in one `Storage.report` call, outcomes stored and acked in one
`Broker.complete` call (record -> ack).

A report of a task always lands before its outcome: once the task has ended the backend refuses
it, and on a connection pool the two calls would race. So a flush first sends the reports still
waiting, and waits for a report in flight that carries one of its tasks.

What does not live here: deciding the outcomes (`_outcome.py`) and the loops that claim and run
(`_worker.py`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import anyio

from ._clock import Clock
from ._message import Outcome, ProgressUpdate
from ._run import Run
from .abc import Broker, Storage

__all__ = ["MAX_RETRY_PAUSE_S", "RETRY_PAUSE_S", "Recorder"]

logger = logging.getLogger("taskflow.worker")

RETRY_PAUSE_S: Final = 0.5
"""The first pause after a failed backend call of a worker's loop; it doubles on each failure."""
MAX_RETRY_PAUSE_S: Final = 10.0
"""The longest pause between retries of a failed backend call."""


class Recorder:
    """Batches the reports and outcomes of one worker's runs to the backend.

    Args:
        broker: Where outcomes are stored and acked (`Broker.complete`).
        storage: Where progress and yields are reported (`Storage.report`).
        clock: The app's clock.
        runs: The worker's held runs by task id: a stored outcome lets go of its run.

    Attributes:
        pending: Outcomes decided and not stored yet, in order.
    """

    def __init__(self, broker: Broker, storage: Storage, clock: Clock, runs: dict[str, Run]):
        self._broker = broker
        self._storage = storage
        self._clock = clock
        self._runs = runs
        self.pending: list[Outcome] = []
        self._flush_event = asyncio.Event()
        # One flush at a time: the drain's final flush waits for the flusher's batch in flight
        # instead of finding nothing pending and letting the stop cancel that batch.
        self._flush_lock = asyncio.Lock()
        self._dirty: dict[str, Run] = {}
        self._report_event = asyncio.Event()
        # One report at a time, so reports of a task land in order; `_reporting` holds the runs
        # of the one in flight, whose outcomes must wait for it (see `flush`).
        self._report_lock = asyncio.Lock()
        self._reporting: dict[str, Run] = {}

    # -- outcomes ------------------------------------------------------------------------------

    def finish(self, outcome: Outcome) -> None:
        """Queue `outcome` for the next flush; its run is ending (`Run.ending`) from now on."""
        run = self._runs.get(outcome.task_id)
        if run is not None:
            run.ending = True
        self.pending.append(outcome)
        if not self._flush_event.is_set():
            self._flush_event.set()

    def take_pending(self) -> list[Outcome]:
        """The outcomes not stored yet, which the caller now stores itself (on the way out)."""
        pending, self.pending = self.pending, []
        return pending

    async def flush_loop(self) -> None:
        """Flush whenever outcomes are queued, until cancelled."""
        event = self._flush_event
        while True:
            await event.wait()
            event.clear()
            await self.flush()

    async def flush(self) -> None:
        """Store and ack every pending outcome; on a backend error keep them and retry."""
        async with self._flush_lock:
            pause = RETRY_PAUSE_S
            while self.pending:
                batch = self.pending
                self.pending = []
                try:
                    if self._dirty or self._reporting_any(batch):
                        await self.report()
                    await self._broker.complete(batch, now=self._clock.time())
                except Exception:
                    logger.exception(
                        "storing %d outcome(s) failed; retrying in %.1f s", len(batch), pause
                    )
                    self.pending[:0] = batch
                    await anyio.sleep(pause)
                    pause = min(pause * 2, MAX_RETRY_PAUSE_S)
                    continue
                except BaseException:
                    self.pending[:0] = batch  # cancelled: the worker stores them on the way out
                    raise
                runs = self._runs
                for outcome in batch:
                    runs.pop(outcome.task_id, None)

    # -- progress and yields -------------------------------------------------------------------

    def mark_dirty(self, run: Run) -> None:
        """`Run.on_report`: the run has progress or yields for the next report."""
        if not run.dirty:
            run.dirty = True
            self._dirty[run.task_id] = run
            self._report_event.set()

    def forget(self, run: Run) -> None:
        """Report nothing more of `run` (its lease was lost)."""
        self._dirty.pop(run.task_id, None)

    async def report_loop(self) -> None:
        """Report whenever a run has something to report, until cancelled."""
        event = self._report_event
        while True:
            await event.wait()
            event.clear()
            await self.report()

    async def report(self) -> None:
        """Send what changed since the last report; waits for a report already in flight."""
        async with self._report_lock:
            dirty = self._dirty
            if not dirty:
                return
            self._dirty = {}
            self._reporting = dirty
            updates = []
            for run in dirty.values():
                run.dirty = False
                updates.append(
                    ProgressUpdate(run.task_id, run.token, run.progress, run.pending_yields)
                )
                run.pending_yields = []
            try:
                await self._storage.report(updates, now=self._clock.time())
            except Exception:
                logger.exception("reporting progress of %d task(s) failed", len(updates))
            finally:
                self._reporting = {}

    def _reporting_any(self, outcomes: list[Outcome]) -> bool:
        """Whether the report in flight carries progress of one of `outcomes`' tasks."""
        reporting = self._reporting
        return bool(reporting) and any(o.task_id in reporting for o in outcomes)
