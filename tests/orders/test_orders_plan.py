"""Property tests of order planning (`taskflow.supervisor._plan`): pure functions, no I/O.

Any plan's units sum to the order's total, fall on the plan's days and inside each day's
window in the plan's own time zone, spread remainders evenly, and are the same when computed
again (the Supervisor stores them once; a rebuilt job must be the same job).
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskflow.supervisor import Order, OrderError, Plan, Supervisor, day_bounds
from taskflow.supervisor._plan import (
    amended_quotas,
    even_split,
    local_date,
    plan_days,
    spread_times,
)

ZONES = ["UTC", "Europe/Moscow", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]

dates = st.dates(min_value=dt.date(2024, 1, 1), max_value=dt.date(2030, 12, 31))
windows = st.tuples(st.integers(0, 22), st.integers(1, 24)).filter(lambda w: w[0] < w[1])


def _window(hours: tuple[int, int]) -> tuple[dt.time, dt.time | None]:
    start, end = hours
    return dt.time(start), None if end == 24 else dt.time(end)


@st.composite
def spread_plans(draw: st.DrawFn) -> tuple[Plan, int]:
    start = draw(dates)
    days = draw(st.integers(1, 40))
    plan = Plan.spread(
        start,
        start + dt.timedelta(days=days - 1),
        window=_window(draw(windows)),
        tz=draw(st.sampled_from(ZONES)),
        spacing=draw(st.sampled_from(["random", "even"])),
    )
    return plan, draw(st.integers(0, 2000))


@given(st.integers(0, 10_000), st.integers(1, 400))
def test_even_split_sums_and_differs_by_at_most_one(total: int, parts: int) -> None:
    shares = even_split(total, parts)
    assert sum(shares) == total
    assert len(shares) == parts
    assert max(shares) - min(shares) <= 1


@given(st.integers(0, 10_000), st.integers(1, 400))
def test_even_split_spreads_remainders_evenly_not_first(total: int, parts: int) -> None:
    # Every prefix stays within one unit of its exact share: the extra units are spaced out.
    running = 0
    for k, share in enumerate(even_split(total, parts), start=1):
        running += share
        assert abs(running - k * total / parts) < 1


@given(spread_plans())
def test_spread_plan_sums_to_total_over_its_days(case: tuple[Plan, int]) -> None:
    plan, total = case
    plan.check(total)
    quotas = plan_days(plan, total, today=dt.date(2024, 1, 1))
    assert sum(q.count for q in quotas) == total
    assert [q.day for q in quotas] == plan.days()
    assert max(q.count for q in quotas) - min(q.count for q in quotas) <= 1


@given(spread_plans(), st.text(min_size=1, max_size=12))
def test_unit_times_respect_window_day_and_zone_and_are_stable(
    case: tuple[Plan, int], seed: str
) -> None:
    plan, total = case
    quotas = plan_days(plan, total, today=dt.date(2024, 1, 1))
    for quota in quotas[:5]:
        times = spread_times(plan, quota.day, quota.count, seed=seed)
        assert len(times) == quota.count
        assert times == sorted(times)
        start, end = day_bounds(plan, quota.day)
        assert all(start <= t < end for t in times)
        assert all(local_date(plan, t) == quota.day for t in times)
        assert spread_times(plan, quota.day, quota.count, seed=seed) == times


@given(
    st.dictionaries(dates, st.integers(0, 50), min_size=1, max_size=20),
    st.sampled_from(ZONES),
    windows,
)
def test_quota_plan_keeps_each_days_count(
    quotas: dict[dt.date, int], tz: str, window: tuple[int, int]
) -> None:
    plan = Plan.quotas_per_day(quotas, window=_window(window), tz=tz)
    total = sum(quotas.values())
    plan.check(total)
    planned = plan_days(plan, total, today=dt.date(2024, 1, 1))
    assert {q.day: q.count for q in planned} == quotas
    for quota in planned[:3]:
        times = spread_times(plan, quota.day, quota.count, seed="o")
        start, end = day_bounds(plan, quota.day)
        assert all(start <= t < end and local_date(plan, t) == quota.day for t in times)


@given(
    st.lists(dates, min_size=1, max_size=15, unique=True),
    st.integers(0, 500),
    st.data(),
)
def test_amended_quotas_sum_to_what_remains(
    days: list[dt.date], remaining: int, data: st.DataObject
) -> None:
    fixed_days = data.draw(st.lists(st.sampled_from(days), unique=True, max_size=len(days) - 1))
    fixed = {d: data.draw(st.integers(0, 20)) for d in fixed_days}
    if sum(fixed.values()) > remaining:
        with pytest.raises(ValueError, match="exceed"):
            amended_quotas(days, remaining, fixed)
        return
    quotas = amended_quotas(days, remaining, fixed)
    assert sum(q.count for q in quotas) == remaining
    assert all(q.count == fixed[q.day] for q in quotas if q.day in fixed)
    free = [q.count for q in quotas if q.day not in fixed]
    assert max(free) - min(free) <= 1


def test_moscow_window_is_utc_three_hours_earlier() -> None:
    plan = Plan.spread(
        dt.date(2026, 12, 1),
        dt.date(2026, 12, 1),
        window=(dt.time(9), dt.time(21)),
        tz="Europe/Moscow",
    )
    start, end = day_bounds(plan, dt.date(2026, 12, 1))
    assert dt.datetime.fromtimestamp(start, dt.UTC) == dt.datetime(2026, 12, 1, 6, tzinfo=dt.UTC)
    assert dt.datetime.fromtimestamp(end, dt.UTC) == dt.datetime(2026, 12, 1, 18, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("plan", "total", "message"),
    [
        (Plan.spread(dt.date(2026, 1, 2), dt.date(2026, 1, 1)), 5, "start <= end"),
        (Plan.spread(dt.date(2026, 1, 1), dt.date(2026, 1, 14), per_day=10), 100, "per_day"),
        (Plan.quotas_per_day({dt.date(2026, 1, 1): 3}), 4, "sum to 3"),
        (Plan.at_once(tz="Mars/Olympus"), 1, "unknown time zone"),
        (
            Plan.spread(dt.date(2026, 1, 1), dt.date(2026, 1, 1), window=(dt.time(21), dt.time(9))),
            1,
            "window must end after it starts",
        ),
    ],
)
async def test_a_plan_that_cannot_carry_the_total_is_refused_at_submit(
    plan: Plan, total: int, message: str
) -> None:
    from taskflow import QueueTasks

    app = QueueTasks("plan-check")

    @app.task
    async def unit() -> None:
        return None

    async with app:
        with pytest.raises(OrderError, match=message):
            await Supervisor(app).submit(Order(task=unit.name, total=total, plan=plan))


def test_the_public_surface_of_taskflow_supervisor_is_its_all() -> None:
    import types

    import taskflow.supervisor as supervisor

    public = {
        name
        for name, value in vars(supervisor).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(supervisor.__all__)


@pytest.mark.parametrize(
    ("args", "says"),
    [((object(),), "cannot be stored"), ((2**70,), "cannot be stored")],
)
async def test_an_order_whose_arguments_cannot_be_stored_is_refused_at_submit(
    args: tuple[object, ...], says: str
) -> None:
    from taskflow import QueueTasks

    app = QueueTasks("args-check")

    @app.task
    async def unit(value: object) -> None:
        return None

    async with app:
        order = Order(task=unit.name, total=1, plan=Plan.at_once(), args=args)
        with pytest.raises(OrderError, match=says):
            await Supervisor(app).submit(order)
