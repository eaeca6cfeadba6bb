"""Planning an order's jobs: the jobs of a new order, and what an amendment changes.

Pure functions of the stored records: `build_jobs` turns day quotas into job records with their
units' times; `plan_amendment` checks an amendment against what has started and works out the
jobs to write, the jobs to drop and the order's new plan. Writing them (with version checks) is
the Supervisor's (`_supervisor.py`); the day arithmetic is `_plan.py`'s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

from .._exceptions import OrderError
from ._model import JobRecord, JobState, OrderRecord, UnitRecord
from ._plan import DayQuota, Plan, amended_quotas, day_start, spread_times

__all__ = ["Amendment", "StoredJobs", "build_jobs", "plan_amendment"]


def build_jobs(
    order_id: str, plan: Plan, quotas: list[DayQuota], first_index: int, now: float
) -> list[JobRecord]:
    """Job records with their units' stored times, unit indexes counting from `first_index`."""
    jobs: list[JobRecord] = []
    index = first_index
    for quota in quotas:
        if plan.kind == "at_once":
            times, due = [now] * quota.count, now
        else:
            times = spread_times(plan, quota.day, quota.count, seed=order_id)
            due = day_start(plan, quota.day)
        units = [UnitRecord(index=index + i, at=at) for i, at in enumerate(times)]
        index += quota.count
        key = quota.day.isoformat()
        jobs.append(JobRecord(order_id=order_id, key=key, day=quota.day, due_at=due, units=units))
    return jobs


@dataclasses.dataclass(frozen=True)
class StoredJobs:
    """An order's stored jobs, by what an amendment may do with them.

    Attributes:
        started: Jobs that have started (they keep their units).
        unstarted: Planned jobs by day, with their stored versions (they may be replaced).
        dropped: Versions of jobs an earlier amendment dropped, by day (a day may come back).
    """

    started: list[JobRecord]
    unstarted: dict[dt.date, tuple[JobRecord, int]]
    dropped: dict[dt.date, int]

    @classmethod
    def of(cls, stored: Mapping[str, tuple[JobRecord, int]]) -> StoredJobs:
        """Sort the stored (job, version) pairs of an order."""
        records = stored.values()
        return cls(
            started=[j for j, _ in records if j.state not in (JobState.PLANNED, JobState.DROPPED)],
            unstarted={j.day: (j, v) for j, v in records if j.state is JobState.PLANNED},
            dropped={j.day: v for j, v in records if j.state is JobState.DROPPED},
        )

    @property
    def last_started(self) -> dt.date | None:
        """The last day that has started, if any."""
        return max((j.day for j in self.started), default=None)

    @property
    def used(self) -> int:
        """How many units the started days hold."""
        return sum(len(j.units) for j in self.started)

    def version(self, day: dt.date) -> int:
        """The stored version a new job of `day` must replace (0: none stored)."""
        if day in self.unstarted:
            return self.unstarted[day][1]
        return self.dropped.get(day, 0)


@dataclasses.dataclass(frozen=True)
class Amendment:
    """What an amendment writes.

    Attributes:
        total: The order's new total.
        quotas: The new quotas of the days not started yet.
        jobs: The new jobs of those days, by day.
        dropped: Planned jobs whose day has no units any more, with their versions.
        plan: The order's new plan (the started days' quotas and the new ones).
    """

    total: int
    quotas: list[DayQuota]
    jobs: dict[dt.date, JobRecord]
    dropped: list[tuple[JobRecord, int]]
    plan: Plan

    def describe(self) -> str:
        """The event log's line for it."""
        return f"total {self.total}; " + ", ".join(f"{q.day}: {q.count}" for q in self.quotas)


def plan_amendment(
    order: OrderRecord,
    stored: StoredJobs,
    quotas: Mapping[dt.date, int],
    end: dt.date | None,
    total: int | None,
    now: float,
) -> Amendment:
    """Check an amendment of `order` and work out what it writes.

    Raises:
        OrderError: the order is final, stopping or runs at once; a day in `quotas` has
            started or is after `end`; the total is below the units started; or the numbers
            do not fit the days.
    """
    _check_amendable(order)
    new_total = order.order.total if total is None else total
    _check_numbers(order.id, stored, quotas, end, new_total)
    days = _amended_days(stored.last_started, set(stored.unstarted), end)
    try:
        new_quotas = amended_quotas(days, new_total - stored.used, dict(quotas))
    except ValueError as exc:
        raise OrderError(str(exc)) from None
    plan = order.order.plan
    first_index = max((u.index for j in stored.started for u in j.units), default=-1) + 1
    jobs = {j.day: j for j in build_jobs(order.id, plan, new_quotas, first_index, now)}
    dropped = [(job, v) for day, (job, v) in stored.unstarted.items() if day not in jobs]
    all_quotas = [DayQuota(j.day, len(j.units)) for j in stored.started] + new_quotas
    new_plan = Plan.quotas_per_day(
        {q.day: q.count for q in all_quotas},
        window=(plan.window_start, plan.window_end),
        tz=plan.tz,
        spacing=plan.spacing,
    )
    return Amendment(new_total, new_quotas, jobs, dropped, new_plan)


def _check_amendable(order: OrderRecord) -> None:
    if order.state.final or order.cancel_requested or order.halted:
        raise OrderError(f"order {order.id!r} is {order.state.value}; it cannot be amended")
    if order.order.plan.kind == "at_once":
        raise OrderError("an order planned at once has no future days to amend")


def _check_numbers(
    order_id: str,
    stored: StoredJobs,
    quotas: Mapping[dt.date, int],
    end: dt.date | None,
    new_total: int,
) -> None:
    last_started = stored.last_started
    for day in quotas:
        if last_started is not None and day <= last_started:
            raise OrderError(f"day {day} has already started; only later days can be amended")
    used = stored.used
    if new_total < used:
        raise OrderError(
            f"{used} units of order {order_id!r} have already started; the total cannot go "
            f"below that (asked: {new_total})"
        )
    if end is not None and any(day > end for day in quotas):
        raise OrderError(f"quotas name days after the new end {end}; drop them or move end")


def _amended_days(
    last_started: dt.date | None, unstarted: set[dt.date], end: dt.date | None
) -> list[dt.date]:
    """The days an amendment may plan units on: the days not started yet, and with a new
    `end`, every day after the last started one up to it (and none after it)."""
    days = set(unstarted)
    if end is not None:
        if last_started is not None:
            first = last_started + dt.timedelta(days=1)
        else:
            first = min(unstarted, default=end)
        days.update(first + dt.timedelta(days=i) for i in range((end - first).days + 1))
        days = {d for d in days if d <= end}
    return sorted(days)
