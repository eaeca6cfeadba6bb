"""Planning an amendment (`taskflow.supervisor._amend`) on its own: pure functions, no I/O.

`tests/orders/test_orders_run.py` amends running orders end to end; these pin the rules.
"""

from __future__ import annotations

import datetime as dt

import pytest

from taskflow.supervisor import JobState, Order, OrderError, Plan
from taskflow.supervisor._amend import StoredJobs, build_jobs, plan_amendment
from taskflow.supervisor._model import JobRecord, OrderRecord
from taskflow.supervisor._plan import plan_days

DAY = dt.date(2030, 1, 1)
NOW = dt.datetime(2029, 12, 31, tzinfo=dt.UTC).timestamp()


def order_over(days: int, total: int) -> OrderRecord:
    plan = Plan.spread(DAY, DAY + dt.timedelta(days=days - 1))
    return OrderRecord(id="ord-1", order=Order(task="unit", total=total, plan=plan))


def stored(record: OrderRecord, started_days: int = 0) -> StoredJobs:
    quotas = plan_days(record.order.plan, record.order.total, DAY)
    jobs = build_jobs(record.id, record.order.plan, quotas, first_index=0, now=NOW)
    for job in jobs[:started_days]:
        job.state = JobState.RUNNING
    return StoredJobs.of({job.key: (job, 1) for job in jobs})


def test_build_jobs_numbers_units_across_days() -> None:
    record = order_over(3, 9)
    jobs = build_jobs(record.id, record.order.plan, plan_days(record.order.plan, 9, DAY), 0, NOW)
    assert [[u.index for u in job.units] for job in jobs] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_an_amendment_replans_the_days_not_started() -> None:
    record = order_over(3, 9)
    jobs = stored(record, started_days=1)
    amendment = plan_amendment(record, jobs, {DAY + dt.timedelta(days=2): 5}, None, 12, NOW)
    assert amendment.total == 12
    assert {q.day: q.count for q in amendment.quotas} == {
        DAY + dt.timedelta(days=1): 4,
        DAY + dt.timedelta(days=2): 5,
    }
    first_new: JobRecord = amendment.jobs[DAY + dt.timedelta(days=1)]
    assert first_new.units[0].index == 3  # after the started day's units
    assert jobs.version(DAY + dt.timedelta(days=1)) == 1


def test_an_earlier_end_drops_the_days_after_it() -> None:
    record = order_over(3, 9)
    amendment = plan_amendment(record, stored(record), {}, DAY + dt.timedelta(days=1), None, NOW)
    assert [job.day for job, _ in amendment.dropped] == [DAY + dt.timedelta(days=2)]
    assert sorted(amendment.jobs) == [DAY, DAY + dt.timedelta(days=1)]


@pytest.mark.parametrize(
    ("quotas", "end", "total", "says"),
    [
        ({DAY: 1}, None, None, "already started"),
        ({}, None, 2, "cannot go below"),
        ({DAY + dt.timedelta(days=2): 1}, DAY + dt.timedelta(days=1), None, "after the new end"),
    ],
)
def test_an_amendment_that_does_not_fit_is_refused(
    quotas: dict[dt.date, int], end: dt.date | None, total: int | None, says: str
) -> None:
    record = order_over(3, 9)
    with pytest.raises(OrderError, match=says):
        plan_amendment(record, stored(record, started_days=1), quotas, end, total, NOW)


def test_a_final_or_at_once_order_cannot_be_amended() -> None:
    record = order_over(3, 9)
    record.cancel_requested = True
    with pytest.raises(OrderError, match="cannot be amended"):
        plan_amendment(record, stored(order_over(3, 9)), {}, None, None, NOW)
    at_once = OrderRecord(id="ord-2", order=Order(task="unit", total=3, plan=Plan.at_once()))
    with pytest.raises(OrderError, match="at once"):
        plan_amendment(at_once, StoredJobs([], {}, {}), {}, None, None, NOW)
