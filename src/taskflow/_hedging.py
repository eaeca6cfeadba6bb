"""`Hedging`: a worker's side of hedged stragglers (the ``hedge`` option, a `Hedge`).

The worker tells it when a run of a hedged task starts and ends. Once per heartbeat period it
shares the run times it measured (`RunTimes`) and looks at its hedged runs: one that has run
longer than its threshold (the task's `Hedge.percentile` of recent run times once
`Hedge.min_samples` are known, else `Hedge.after`) gets one copy, enqueued in the same queue with
the id ``derived_task_id(id, "hedge:1", queue)``, ``outcome_to`` the task and ``copy`` set. The
backend does the rest (see `taskflow.abc.Broker.complete`): the first outcome stored wins and
ends both, the loser is cancelled (a running one by request, a late outcome refused), and the
event stream says HEDGED when the copy is enqueued and "won by copy <id>" if it wins.

A copy is started only while the worker registry shows another live worker serving the queue,
since a copy on the same worker would straggle with it; a worker that claims a copy of a run it
holds itself gives it back (`give_back`) for `GIVE_BACK_S`, for another worker to take. The id
is derived, so a task gets one copy at most, even after its worker crashed and a re-run hedged
again.

What does not live here: the race itself (the backends), the run times (``_run_times.py``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Final

import msgspec

from ._clock import Clock
from ._ids import derived_task_id
from ._message import Hedge, Outcome, OutcomeKind, TaskMessage
from ._run import Run
from ._run_times import RunTimes, percentile
from .abc import Broker, Coordination

__all__ = ["GIVE_BACK_S", "HEDGE_KEY", "Hedging", "hedge_copy"]

logger = logging.getLogger("taskflow.worker")

HEDGE_KEY: Final = "hedge:1"
"""The key of a task's hedge copy in `derived_task_id`."""
GIVE_BACK_S: Final = 1.0
"""How long a copy given back by the worker running its task waits before it is claimable."""


@dataclasses.dataclass(slots=True)
class _Watched:
    """A run of a hedged task, from its start to its end."""

    run: Run
    message: TaskMessage
    hedge: Hedge
    started_at: float
    hedged: bool = False


class Hedging:
    """A worker's hedged runs (see the module docstring).

    Args:
        broker: Where copies are enqueued.
        coordination: The worker registry and the shared run times.
        clock: The app's clock.
        worker_id: This worker's id (another live worker is needed for a copy).
        runs: The runs this worker holds, by task id.
        period_s: How often the runs are looked at (the heartbeat period).
    """

    def __init__(
        self,
        broker: Broker,
        coordination: Coordination,
        clock: Clock,
        *,
        worker_id: str,
        runs: Mapping[str, Run],
        period_s: float,
    ) -> None:
        self._broker = broker
        self._coordination = coordination
        self._clock = clock
        self._worker_id = worker_id
        self._runs = runs
        self._period_s = period_s
        self._watched: dict[str, _Watched] = {}
        self.run_times = RunTimes(coordination)

    # -- told by the worker ---------------------------------------------------------------------

    def started(self, run: Run, message: TaskMessage) -> None:
        """`run` starts: watch it if its task is hedged."""
        if message.hedge is None:
            return
        # A copy is not hedged again (`hedged`), but its run time counts like any run's.
        self._watched[run.task_id] = _Watched(
            run, message, message.hedge, self._clock.time(), hedged=message.copy
        )

    def ended(self, run: Run, outcome: Outcome | None) -> None:
        """`run` ended with `outcome` (None: its lease was lost): a DONE run's time counts."""
        watched = self._watched.pop(run.task_id, None)
        if watched is not None and outcome is not None and outcome.kind is OutcomeKind.DONE:
            self.run_times.add(watched.message.name, self._clock.time() - watched.started_at)

    def give_back(self, run: Run, message: TaskMessage) -> Outcome | None:
        """A RELEASE (due in `GIVE_BACK_S`) if `message` is a copy of a run this worker holds,
        so another worker takes it; else None."""
        if not message.copy or message.outcome_to not in self._runs:
            return None
        logger.debug(
            "task %s: a hedge copy of %s, which this worker runs; given back for another",
            run.task_id,
            message.outcome_to,
        )
        return Outcome(
            run.task_id,
            run.token,
            OutcomeKind.RELEASE,
            retry_at=self._clock.time() + GIVE_BACK_S,
        )

    # -- the pass -------------------------------------------------------------------------------

    async def loop(self) -> None:
        """Share run times and hedge stragglers, once per period, until cancelled."""
        while True:
            await self._clock.sleep(self._period_s)
            try:
                await self.check()
            except Exception:
                logger.exception("the hedging pass failed; will try again next period")

    async def check(self) -> None:
        """One pass: share run times, then start a copy of each run past its threshold."""
        names = {w.message.name for w in self._watched.values()}
        await self.run_times.share(names | self.run_times.unshared_names())
        due = self._due()
        if not due:
            return
        now = self._clock.time()
        workers = await self._coordination.list_workers(now=now)
        for watched in due:
            queue = watched.message.queue
            if any(w.id != self._worker_id and queue in w.queues for w in workers):
                await self._hedge(watched, now)
            else:
                logger.debug(
                    "task %s is a straggler, but no other live worker serves queue %r: no copy",
                    watched.run.task_id,
                    queue,
                )

    def _due(self) -> list[_Watched]:
        now = self._clock.time()
        due = []
        for watched in self._watched.values():
            run = watched.run
            if watched.hedged or run.ending or run.interrupt_reason is not None:
                continue
            threshold = self.threshold(watched.message.name, watched.hedge)
            if threshold is not None and now - watched.started_at >= threshold:
                due.append(watched)
        return due

    def threshold(self, name: str, hedge: Hedge) -> float | None:
        """Seconds after which a run of task `name` is hedged, or None (not known yet)."""
        samples = self.run_times.samples(name)
        if hedge.percentile is not None and len(samples) >= hedge.min_samples:
            return percentile(samples, hedge.percentile)
        return hedge.after

    async def _hedge(self, watched: _Watched, now: float) -> None:
        copy = hedge_copy(watched.message, now)
        [result] = await self._broker.enqueue([copy], now=now)
        watched.hedged = True
        logger.info(
            "task %s (%s) has run %.1f s, past its hedge threshold: %s copy %s on another worker",
            watched.run.task_id,
            watched.message.name,
            now - watched.started_at,
            "started" if result.created else "already has",
            copy.id,
        )


def hedge_copy(message: TaskMessage, now: float) -> TaskMessage:
    """The hedge copy of `message`: same task, arguments and queue, its own derived id, its
    outcome going to `message`'s task; no parents, children, dedup key, delay or expiry. It
    keeps its `hedge` (its run time counts) but is never hedged itself (`copy`)."""
    return msgspec.structs.replace(
        message,
        id=derived_task_id(message.id, HEDGE_KEY, message.queue),
        outcome_to=message.id,
        copy=True,
        node=None,
        waits_for=[],
        children=[],
        dedup_key=None,
        dedup_ttl_s=None,
        eta=None,
        expires_at=None,  # "not started by then": its task started, so neither is it late
        created_at=now,
        requeued_from=None,
    )
