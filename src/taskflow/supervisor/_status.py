"""What an order's stored jobs add up to: counts, per-job status, failures, the final report.

Pure functions of the stored records (and, for `status`, the live status of tasks still in the
broker). What does not live here: reading the records (`_store.py`, `_book.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from .._message import TaskStatus
from .._rollup import Counts, summarize
from ._manager import unit_task_id
from ._model import (
    JobRecord,
    JobState,
    JobStatus,
    OrderRecord,
    OrderReport,
    OrderState,
    OrderStatus,
    UnitFailure,
    UnitRecord,
    UnitState,
)

__all__ = ["failures", "live_task_ids", "order_status", "report", "stored_counts"]

_LIVE_STATE: Final = {
    TaskStatus.RUNNING: "running",
    TaskStatus.DONE: "done",
    TaskStatus.FAILED: "failed",
    TaskStatus.EXPIRED: "failed",
    TaskStatus.CANCELLED: "cancelled",
}


def live_task_ids(jobs: list[JobRecord]) -> list[str]:
    """The tasks of units still in the broker (queued or running), whose status the job
    records may lag behind."""
    return [u.task_id for j in jobs for u in j.units if u.status is UnitState.QUEUED]


def order_status(
    order: OrderRecord, jobs: list[JobRecord], live: Mapping[str, TaskStatus]
) -> OrderStatus:
    """The order's `OrderStatus`; units in the broker counted by their task's `live` status."""
    job_statuses = [_job_status(job, live) for job in jobs if job.state is not JobState.DROPPED]
    counts = Counts()
    for job_status in job_statuses:
        counts.add(job_status.counts)
    return OrderStatus(
        order_id=order.id,
        state=order.state,
        total=order.order.total,
        counts=counts,
        jobs=job_statuses,
        failures=failures(jobs),
        reason=order.reason,
        notified=order.notified,
        label=order.order.label,
    )


def stored_counts(jobs: list[JobRecord]) -> Counts:
    """The units of the jobs counted by their stored state."""
    counts = Counts()
    for job in jobs:
        if job.state is not JobState.DROPPED:
            counts.add(_unit_counts(job.units, {}))
    return counts


def failures(jobs: list[JobRecord]) -> list[UnitFailure]:
    """Every failed unit of the jobs, with its reason."""
    return [
        UnitFailure(
            index=u.index,
            task_id=u.task_id or unit_task_id(job.order_id, u.index),
            job=job.key,
            reason=u.reason or "failed",
        )
        for job in jobs
        for u in job.units
        if u.status is UnitState.FAILED
    ]


def report(order: OrderRecord, jobs: list[JobRecord]) -> OrderReport:
    """The `OrderReport` the notifier task receives once the order is final."""
    counts = stored_counts(jobs)
    failed = failures(jobs)
    return OrderReport(
        order_id=order.id,
        label=order.order.label,
        state=order.state,
        succeeded=order.state is OrderState.SUCCEEDED,
        total=order.order.total,
        counts=counts,
        failures=failed,
        reason=order.reason,
        summary=summarize(order.order.total, counts, [f.reason for f in failed]),
        days={
            j.key: f"{j.state.value}: {_unit_counts(j.units, {}).done}/{len(j.units)} done"
            for j in jobs
            if j.state is not JobState.DROPPED
        },
    )


def _unit_counts(units: list[UnitRecord], live: Mapping[str, TaskStatus]) -> Counts:
    """Count units by their stored state; a unit whose task is in the broker is counted by
    its task's current status (`live`), which may be ahead of the job record."""
    counts = Counts()
    for unit in units:
        if unit.status is UnitState.QUEUED:
            task_status = live.get(unit.task_id)
            field = "queued" if task_status is None else _LIVE_STATE.get(task_status, "queued")
        else:
            field = unit.status.value
        setattr(counts, field, getattr(counts, field) + 1)
    return counts


def _job_status(job: JobRecord, live: Mapping[str, TaskStatus]) -> JobStatus:
    reasons = list(dict.fromkeys(u.reason for u in job.units if u.status is UnitState.FAILED))
    return JobStatus(
        key=job.key,
        day=job.day,
        state=job.state,
        counts=_unit_counts(job.units, live),
        reasons=[r for r in reasons if r],
    )
