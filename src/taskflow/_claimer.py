"""`Claimer`: a worker's claim loop. It claims up to the free capacity in one backend call and
hands the deliveries to the worker; when the queues are dry it sleeps until the next due time
or until the backend says work may be there (`Broker.watch_work`).

Capacity is the worker's slots plus a claim ahead: as many tasks as the slots finish within
`prefetch_wait_s` at the measured pace. What does not live here: running what was claimed
(`_worker.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from ._aio import first_of
from ._clock import Clock, SystemClock
from ._config import GlobalConfig
from ._message import Delivery
from ._recorder import MAX_RETRY_PAUSE_S, RETRY_PAUSE_S
from .abc import Broker

__all__ = ["Claimer"]

logger = logging.getLogger("taskflow.worker")


class Claimer:
    """Claims for one worker until `stop()`.

    Args:
        broker: Where to claim from.
        queues: The worker's queues.
        worker_id: The worker's id (the claim's owner).
        concurrency: The worker's slots.
        config: `claim_batch`, `lease_s`, `prefetch_wait_s`, `idle_poll_s`.
        clock: The app's clock.
        occupied: How many claimed tasks are running or waiting for a slot.
        hand_out: Takes each batch of deliveries.
    """

    def __init__(
        self,
        broker: Broker,
        queues: Sequence[str],
        worker_id: str,
        concurrency: int,
        config: GlobalConfig,
        clock: Clock,
        *,
        occupied: Callable[[], int],
        hand_out: Callable[[list[Delivery]], None],
    ) -> None:
        self._broker = broker
        self._queues = queues
        self._worker_id = worker_id
        self._concurrency = concurrency
        self._config = config
        self._clock = clock
        self._occupied = occupied
        self._hand_out = hand_out
        #: Moving average of how long a task holds its slot (s); None until one ran.
        self._run_s: float | None = None
        self._capacity_waiter: asyncio.Future[None] | None = None
        # The idle wait: one future, resolved by the work watcher, a timer or stop().
        self._idle_waiter: asyncio.Future[None] | None = None
        self._work_pending = False
        self._stopping = False
        self._stop_event = asyncio.Event()

    def stop(self) -> None:
        """Claim no more: the loop returns (from an idle or a capacity wait too)."""
        self._stopping = True
        self._stop_event.set()
        self._wake()
        self._capacity_freed()

    def on_work(self) -> None:
        """`Broker.watch_work`'s callback: work may be claimable (remembered until the next
        claim begins, so a push between a claim and the idle wait is not lost)."""
        self._work_pending = True
        self._wake()

    def slot_freed(self, took: float) -> None:
        """A slot finished a run that held it `took` seconds: claim again, at this pace."""
        pace = self._run_s
        self._run_s = took if pace is None else pace + 0.1 * (took - pace)
        self._capacity_freed()

    def capacity_freed(self) -> None:
        """A claimed run left without taking a slot (parked for its locks): claim again."""
        self._capacity_freed()

    async def loop(self) -> None:
        """Claim until `stop()`; a failed claim is retried after a growing pause."""
        config = self._config
        pause = RETRY_PAUSE_S
        while not self._stopping:
            free = self._concurrency + self._claim_ahead() - self._occupied()
            if free <= 0:
                await self._wait_capacity()
                continue
            self._work_pending = False
            limit = min(free, config.claim_batch)
            try:
                deliveries = await self._broker.claim(
                    self._queues,
                    limit=limit,
                    lease_s=config.lease_s,
                    now=self._clock.time(),
                    worker_id=self._worker_id,
                )
                pause = RETRY_PAUSE_S
            except Exception:
                logger.exception("claim failed; retrying in %.1f s", pause)
                await first_of(self._clock.sleep(pause), self._stop_event.wait())
                pause = min(pause * 2, MAX_RETRY_PAUSE_S)
                continue
            if deliveries:
                self._hand_out(deliveries)
            if len(deliveries) < limit:
                # The queues ran dry: no second claim just to hear "empty" (a round trip on
                # the latency path); anything enqueued since this claim began wakes us.
                await self._wait_for_work()

    def _claim_ahead(self) -> int:
        """How many tasks to claim beyond the free slots: as many as the slots finish within
        `prefetch_wait_s` at the measured pace (an average of recent run times), at most one
        claim batch. None before the first task ran, none for long tasks."""
        pace = self._run_s
        wait = self._config.prefetch_wait_s
        if pace is None or wait <= 0:
            return 0
        return min(self._config.claim_batch, int(wait * self._concurrency / max(pace, 1e-6)))

    async def _wait_capacity(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._capacity_waiter = fut
        try:
            await fut
        finally:
            self._capacity_waiter = None
        # Let the other slots that finish in this same turn free up too: claim once for many.
        await asyncio.sleep(0)

    def _capacity_freed(self) -> None:
        waiter = self._capacity_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait_for_work(self) -> None:
        """Idle: wait for pushed work, the next due time (bounded by idle_poll_s), or stop."""
        try:
            due = await self._broker.next_due(self._queues, now=self._clock.time())
        except Exception:
            logger.exception("next_due failed")
            due = None
        timeout = self._config.idle_poll_s
        if due is not None:
            # From the time the answer came back, not the time it was asked: on a server the
            # round trip would delay every due task by its length.
            timeout = min(timeout, max(0.0, due - self._clock.time()))
        if self._work_pending or self._stopping:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._idle_waiter = waiter
        timer: asyncio.TimerHandle | asyncio.Task[None]
        if isinstance(self._clock, SystemClock):
            timer = loop.call_later(timeout, self._wake)
        else:
            timer = loop.create_task(self._wake_after(timeout))
        try:
            await waiter
        finally:
            self._idle_waiter = None
            timer.cancel()

    async def _wake_after(self, seconds: float) -> None:
        await self._clock.sleep(seconds)
        self._wake()

    def _wake(self) -> None:
        waiter = self._idle_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
