"""`LockGate`: the reader/writer locks a task declares (``locks=[...]``), taken for each run
before it takes a slot, renewed with its lease, and released when the run ends.

A claimed run whose message declares locks waits here, not in a slot. The gate asks for the
locks of every such run in one `Coordination.acquire_locks` call (owner: the task id; waiting
requests are queued; held until ``now + lease_s``):

* all granted: the run goes on to a slot (`admit`);
* not all: the run is *parked*. What it was granted is released, and its message goes back to
  the broker as a RELEASE (its attempt refunded) due at a safety-net time (``now + lease_s/2``),
  so it holds no slot while its requests wait in the locks' queues. When a release grants it
  the locks, the releasing worker wakes it (`Broker.wake`) and the next claim runs it; the
  safety-net time only matters if that wake was lost (the releasing worker died), and the
  claim it brings refreshes the queued requests before they lapse.

The locks of running tasks are renewed with their leases (`renew`, one call) and a run whose
lock was lost is interrupted (`on_lost`). When a run ends (`ended`) its locks are released in
the next batch and the owners that release granted are woken. What does not live here: the
locks themselves (`Coordination`), the worker's loops (`_worker.py`), what a task declares
(`_lock_types.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

import anyio

from ._clock import Clock
from ._config import GlobalConfig
from ._message import (
    ErrorInfo,
    LockHold,
    LockMode,
    LockRequest,
    Outcome,
    OutcomeKind,
    TaskMessage,
    TaskStatus,
)
from ._recorder import MAX_RETRY_PAUSE_S, RETRY_PAUSE_S
from ._run import Run
from .abc import Broker

__all__ = ["WAITING_FOR_LOCK", "LockGate"]

logger = logging.getLogger("taskflow.worker")

#: The detail of the ``released`` event of a task parked to wait for its declared locks.
WAITING_FOR_LOCK = "WaitingForLock"

_TERMINAL = frozenset(s for s in TaskStatus if s.terminal)
#: The mode of a withdrawal made for an ended owner: a withdrawal matches name and owner.
_ANY_MODE = LockMode.SHARED


class LockGate:
    """Takes, renews and releases the declared locks of one worker's runs.

    Args:
        broker: The worker's broker (its `coordination` keeps the locks).
        clock: The app's clock.
        config: `lease_s`: how long a lock is held unless renewed, and twice the safety net.
        admit: Takes a run whose locks are all held: it goes on to a slot.
        parked: Called with a run given back to wait for its locks (its RELEASE is stored):
            the worker lets go of it.
        settle: Takes an outcome the gate could not store itself (the recorder retries it).
        on_lost: Called with a hold (its owner: the task id) and its mode when a renewal finds
            that lock lost.
    """

    def __init__(
        self,
        broker: Broker,
        clock: Clock,
        config: GlobalConfig,
        *,
        admit: Callable[[Run], None],
        parked: Callable[[Run], None],
        settle: Callable[[Outcome], None],
        on_lost: Callable[[LockHold, LockMode], None],
    ) -> None:
        self._broker = broker
        self._clock = clock
        self._lease_s = config.lease_s
        self._admit = admit
        self._parked = parked
        self._settle = settle
        self._on_lost = on_lost
        #: Runs waiting for the next acquire call, with their requests.
        self._waiting: list[tuple[Run, list[LockRequest]]] = []
        #: How many runs the acquire call in flight asks for.
        self._asking = 0
        #: The locks held for each admitted run, by task id.
        self._holds: dict[str, list[LockHold]] = {}
        #: The mode of each lock an admitted run declared, by task id and lock name.
        self._modes: dict[str, dict[str, LockMode]] = {}
        #: Locks of ended runs, for the next release call.
        self._to_release: list[LockHold] = []
        #: Set when runs wait to ask (`_waiting`), and when ended runs' locks wait to be
        #: released (`_to_release`).
        self._event = asyncio.Event()
        self._release_event = asyncio.Event()
        #: Background checks of granted owners that may have ended (`_withdraw_ended`).
        self._checks: set[asyncio.Task[None]] = set()

    # -- what the worker calls (synchronously) ---------------------------------------------

    @property
    def occupied(self) -> int:
        """Runs the gate holds before a slot: waiting to ask, or being asked for."""
        return len(self._waiting) + self._asking

    def submit(self, run: Run, message: TaskMessage) -> None:
        """Take the locks `message` declares for `run` before it goes on to a slot."""
        requests = [LockRequest(name, run.task_id, mode) for name, mode in message.locks]
        self._waiting.append((run, requests))
        self._event.set()

    def ended(self, task_id: str) -> None:
        """The run of `task_id` ended (any way): release its locks in the next batch."""
        holds = self._holds.pop(task_id, None)
        self._modes.pop(task_id, None)
        if holds:
            self._to_release += holds
            self._release_event.set()

    def take_waiting(self) -> list[Run]:
        """The runs that wait to ask for their locks, which the caller gives back (a stop)."""
        waiting, self._waiting = self._waiting, []
        return [run for run, _ in waiting]

    # -- the loop --------------------------------------------------------------------------

    async def loop(self) -> None:
        """Release and acquire in batches whenever there is something to do, until cancelled:
        two loops, so that a release never waits for an acquire call in flight, nor the other
        way round."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._batches, self._release_event, self.flush, "releasing")
            await self._batches(self._event, self._ask, "taking")

    async def _batches(
        self, event: asyncio.Event, step: Callable[[], Awaitable[None]], what: str
    ) -> None:
        pause = RETRY_PAUSE_S
        while True:
            await event.wait()
            event.clear()
            try:
                await step()
            except Exception:
                logger.exception("%s locks failed; retrying in %.1f s", what, pause)
                event.set()
                await self._clock.sleep(pause)
                pause = min(pause * 2, MAX_RETRY_PAUSE_S)
            else:
                pause = RETRY_PAUSE_S

    async def flush(self) -> None:
        """Release the locks of ended runs now, and wake the owners that granted."""
        holds, self._to_release = self._to_release, []
        if not holds:
            return
        try:
            granted = await self._broker.coordination.release_locks(
                holds, ttl_s=self._lease_s, now=self._clock.time()
            )
        except BaseException:
            self._to_release[:0] = holds
            raise
        await self._wake(granted, {hold.name for hold in holds})

    async def renew(self, now: float) -> None:
        """Renew every held lock in one call, with the heartbeat's `now`: a lock then lapses
        with its task's lease, never after it, so a run re-delivered once the lease lapsed
        never finds the lock of the run before it still held. Reports the lost ones."""
        held = [(task_id, hold) for task_id, holds in self._holds.items() for hold in holds]
        if not held:
            return
        renewed = await self._broker.coordination.renew_locks(
            [hold for _, hold in held], ttl_s=self._lease_s, now=now
        )
        for (task_id, hold), ok in zip(held, renewed, strict=True):
            if not ok and task_id in self._holds:
                logger.warning(
                    "task %s lost its lock %r (it lapsed and was granted to another owner)",
                    task_id,
                    hold.name,
                )
                self._holds[task_id] = [h for h in self._holds[task_id] if h != hold]
                self._on_lost(hold, self._modes.get(task_id, {}).get(hold.name, _ANY_MODE))

    async def release_all(self) -> None:
        """Release every lock still held (the worker is going away)."""
        for task_id in list(self._holds):
            self.ended(task_id)
        await self.flush()

    def stop_checks(self) -> None:
        """Cancel the background checks of granted owners (the worker is gone; the grant of an
        ended owner then lapses by itself)."""
        for check in list(self._checks):
            check.cancel()

    # -- acquiring -------------------------------------------------------------------------

    async def _ask(self) -> None:
        """One acquire call for every waiting run; admit or park each."""
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        self._asking = len(batch)
        # Held no longer than the runs' leases (then renewed with them): a run re-delivered
        # after its lease lapsed never finds the lock of the dead run before it still held.
        now = self._clock.time()
        ttl_s = max(0.001, min(run.lease_until for run, _ in batch) - now)
        try:
            tokens = await self._acquire(
                [r for _, requests in batch for r in requests], ttl_s=ttl_s, now=now
            )
        except BaseException:
            self._waiting[:0] = batch
            raise
        finally:
            self._asking = 0
        parked: list[tuple[Run, list[LockRequest], list[LockHold]]] = []
        withdrawn: list[LockRequest] = []
        answers = _per_run([requests for _, requests in batch], tokens)
        for (run, requests), (holds, queued) in zip(batch, answers, strict=True):
            if not queued or run.interrupt_reason is not None:
                # Held, or interrupted meanwhile (its slot decides the outcome, and its end
                # releases what it holds): no request of it stays queued.
                withdrawn += queued
                self._holds[run.task_id] = holds
                self._modes[run.task_id] = {r.name: r.mode for r in requests}
                self._admit(run)
            else:
                parked.append((run, requests, holds))
        if withdrawn:
            await self._withdraw(withdrawn)
        if parked:
            await self._park(parked)

    async def _acquire(
        self, requests: list[LockRequest], *, ttl_s: float | None = None, now: float | None = None
    ) -> list[int | None]:
        return await self._broker.coordination.acquire_locks(
            requests,
            ttl_s=self._lease_s if ttl_s is None else ttl_s,
            now=self._clock.time() if now is None else now,
        )

    async def _park(self, parked: list[tuple[Run, list[LockRequest], list[LockHold]]]) -> None:
        """Give the runs back to wait for their locks, releasing what they were granted."""
        granted = [hold for _, _, holds in parked for hold in holds]
        if granted:
            woken = await self._broker.coordination.release_locks(
                granted, ttl_s=self._lease_s, now=self._clock.time()
            )
            await self._wake(woken, {hold.name for hold in granted})
        now = self._clock.time()
        retry_at = now + self._lease_s / 2
        outcomes = [
            Outcome(
                run.task_id,
                run.token,
                OutcomeKind.RELEASE,
                error=_waiting_for(requests, holds),
                retry_at=retry_at,
            )
            for run, requests, holds in parked
        ]
        for run, _, _ in parked:
            run.ending = True
        try:
            stored = await self._broker.complete(outcomes, now=now)
        except Exception:
            logger.exception("parking %d task(s) failed; the worker stores it", len(outcomes))
            for outcome in outcomes:
                self._settle(outcome)
            return
        for run, _, _ in parked:
            self._parked(run)
        # A release between our acquire and the RELEASE may have granted the locks and found
        # the task still running (its wake did nothing): ask again, now that it is parked.
        await self._recheck(
            [requests for (_, requests, _), ok in zip(parked, stored, strict=True) if ok]
        )

    async def _recheck(self, parked: list[list[LockRequest]]) -> None:
        """Wake the parked tasks whose locks are all theirs now; release partial grants."""
        if not parked:
            return
        tokens = await self._acquire([r for requests in parked for r in requests])
        ready: list[str] = []
        partial: list[LockHold] = []
        for requests, (holds, queued) in zip(parked, _per_run(parked, tokens), strict=True):
            if queued:
                partial += holds
            else:
                ready.append(requests[0].owner)
        if ready:
            await self._broker.wake(ready, now=self._clock.time())
        if partial:
            woken = await self._broker.coordination.release_locks(
                partial, ttl_s=self._lease_s, now=self._clock.time()
            )
            await self._wake(woken, {hold.name for hold in partial})

    async def _withdraw(self, requests: list[LockRequest]) -> None:
        woken = await self._broker.coordination.withdraw_lock_requests(
            requests, ttl_s=self._lease_s, now=self._clock.time()
        )
        await self._wake(woken, {r.name for r in requests})

    # -- waking ----------------------------------------------------------------------------

    async def _wake(self, owners: list[str], names: Iterable[str]) -> None:
        """Wake the parked tasks a release granted locks `names` to, then (in the background,
        off the path of the next acquire) see to the owners that ended while parked."""
        if not owners:
            return
        await self._broker.wake(owners, now=self._clock.time())
        check = asyncio.get_running_loop().create_task(
            self._withdraw_ended(owners, sorted(set(names))), name="taskflow-lock-check"
        )
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)

    async def _withdraw_ended(self, owners: list[str], names: list[str]) -> None:
        """A granted owner that ended while parked (cancelled, purged) will never use its
        grant: its requests of `names` are withdrawn, which grants the next waiters, woken in
        turn (and checked the same way)."""
        try:
            await self._withdraw_ended_now(owners, names)
        except Exception:
            logger.exception(
                "could not check the tasks granted locks %s; an ended one keeps its grant "
                "until it lapses",
                ", ".join(names),
            )

    async def _withdraw_ended_now(self, owners: list[str], names: list[str]) -> None:
        while owners:
            now = self._clock.time()
            records = await self._broker.storage.get_many(owners, now=now)
            gone = [r.id for r in records if r is not None and r.status in _TERMINAL]
            if not gone:
                return
            logger.info("withdrawing the lock requests of %d ended task(s)", len(gone))
            requests = [LockRequest(n, owner, _ANY_MODE) for owner in gone for n in names]
            owners = await self._broker.coordination.withdraw_lock_requests(
                requests, ttl_s=self._lease_s, now=self._clock.time()
            )
            if owners:
                await self._broker.wake(owners, now=self._clock.time())


def _per_run(
    groups: list[list[LockRequest]], tokens: list[int | None]
) -> list[tuple[list[LockHold], list[LockRequest]]]:
    """Split the answer of one acquire call for the concatenated `groups` (one per run): per
    run, the holds granted and the requests left queued."""
    out: list[tuple[list[LockHold], list[LockRequest]]] = []
    start = 0
    for requests in groups:
        if len(requests) == 1:  # the usual case: one lock
            request, token = requests[0], tokens[start]
            start += 1
            if token is None:
                out.append(([], [request]))
            else:
                out.append(([LockHold(request.name, request.owner, token)], []))
            continue
        got = tokens[start : start + len(requests)]
        start += len(requests)
        pairs = list(zip(requests, got, strict=True))
        holds = [LockHold(r.name, r.owner, t) for r, t in pairs if t is not None]
        queued = [r for r, t in pairs if t is None]
        out.append((holds, queued))
    return out


def _waiting_for(requests: list[LockRequest], holds: list[LockHold]) -> ErrorInfo:
    """Why a parked task was given back, for its ``released`` event (detail ``WaitingForLock``):
    the locks it waits for."""
    granted = {hold.name for hold in holds}
    waiting = [f"{r.name!r} ({r.mode.value})" for r in requests if r.name not in granted]
    return ErrorInfo(WAITING_FOR_LOCK, f"waiting for lock {', '.join(waiting)}")
