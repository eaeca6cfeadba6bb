"""Periodic tasks on the memory backend under `FakeClock`: cron and interval schedules, time
zones and DST, several workers of one process running each slot once, pause and resume,
missed slots skipped or caught up, and declarations refused at decoration.

The slot-once guarantee through each real backend is in tests/conformance/test_periodic.py;
real worker processes in tests/backends/*/test_periodic_processes.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

from taskflow import (
    GlobalConfig,
    InvalidArguments,
    QueueTasks,
    ScheduleNotFound,
    TaskContext,
    TaskRegistrationError,
)
from taskflow._scheduler import SLOT_HEADER
from taskflow.testing import FakeClock

BERLIN = ZoneInfo("Europe/Berlin")
MOSCOW = ZoneInfo("Europe/Moscow")

Runs = list[tuple[float, float]]
"""(when the run started by the clock, the slot it ran for)."""


def at(zone: ZoneInfo, *parts: int, fold: int = 0) -> float:
    return datetime(*parts, tzinfo=zone, fold=fold).timestamp()  # type: ignore[misc]


def make_app(start: float) -> tuple[QueueTasks, FakeClock]:
    clock = FakeClock(start)
    return QueueTasks("periodic", clock=clock, config=GlobalConfig(idle_poll_s=1000)), clock


def declare_tick(app: QueueTasks, runs: Runs, **periodic: Any) -> None:
    """A periodic task "tick" that records (clock time, slot) per run."""

    @app.periodic(**periodic)
    @app.task(name="tick")
    async def tick(ctx: TaskContext) -> None:
        runs.append((app.clock.time(), float(ctx.headers[SLOT_HEADER])))


@asynccontextmanager
async def workers(app: QueueTasks, n: int) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for _ in range(n):
            await stack.enter_async_context(app.running())
        await anyio.wait_all_tasks_blocked()  # the schedulers took their first look
        yield


async def advance_to(clock: FakeClock, until: float, step: float) -> None:
    """Move the clock to `until` in steps of `step` (from its time now)."""
    start = clock.time()
    for n in range(1, round((until - start) / step) + 1):
        await clock.set(start + n * step)
        await anyio.wait_all_tasks_blocked()


# -- every -----------------------------------------------------------------------------------


@pytest.mark.parametrize("every_s", [0.5, 0.1, 5.0])
async def test_an_interval_runs_each_slot_once_on_time_across_three_workers(
    every_s: float,
) -> None:
    app, clock = make_app(1_700_000_000.0)
    runs: Runs = []
    declare_tick(app, runs, every=timedelta(seconds=every_s))
    async with workers(app, 3):
        await advance_to(clock, 1_700_000_000.0 + 20 * every_s, every_s / 2)
    slots = [slot for _, slot in runs]
    assert slots == [round(1_700_000_000.0 + k * every_s, 6) for k in range(1, 21)]
    assert all(started == slot for started, slot in runs)  # started at its slot, not later


async def test_interval_slots_fall_on_multiples_of_the_interval_since_the_epoch() -> None:
    app, clock = make_app(1_700_000_000.3)
    runs: Runs = []
    declare_tick(app, runs, every=2)
    async with workers(app, 1):
        await advance_to(clock, 1_700_000_006.3, 0.5)
    assert [slot for _, slot in runs] == [1_700_000_002.0, 1_700_000_004.0, 1_700_000_006.0]


async def test_fixed_arguments_go_to_every_run_and_the_run_ids_name_the_slot() -> None:
    app, clock = make_app(1_700_000_000.0)
    seen: list[tuple[str, int, str]] = []

    @app.periodic(every=1, name="greeter", args=("hi",), kwargs={"times": 2}, queue="beat")
    @app.task(name="job")
    async def greet(ctx: TaskContext, word: str, times: int) -> None:
        seen.append((word, times, ctx.task_id))

    async with app.running(queues=["beat"]):
        await anyio.wait_all_tasks_blocked()
        await advance_to(clock, 1_700_000_002.0, 0.5)
    assert seen == [
        ("hi", 2, "periodic:greeter:1700000001000"),
        ("hi", 2, "periodic:greeter:1700000002000"),
    ]


# -- cron, time zones, DST -------------------------------------------------------------------


async def test_cron_runs_in_its_time_zone() -> None:
    start = at(MOSCOW, 2026, 6, 1, 11, 58)
    app, clock = make_app(start)
    runs: Runs = []
    declare_tick(app, runs, cron="*/5 * * * *", tz="Europe/Moscow")
    async with workers(app, 2):
        await advance_to(clock, start + 13 * 60, 30)
    assert [datetime.fromtimestamp(s, MOSCOW).strftime("%H:%M") for _, s in runs] == [
        "12:00",
        "12:05",
        "12:10",
    ]
    assert all(started == slot for started, slot in runs)


async def test_a_daily_slot_in_the_skipped_spring_hour_runs_right_after_the_gap() -> None:
    # Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    start = at(BERLIN, 2026, 3, 29, 1, 50)
    app, clock = make_app(start)
    runs: Runs = []
    declare_tick(app, runs, cron="30 2 * * *", tz="Europe/Berlin")
    async with workers(app, 1):
        await advance_to(clock, start + 30 * 60, 30)
    assert [s for _, s in runs] == [at(BERLIN, 2026, 3, 29, 3, 0)]  # as Debian's cron does


async def test_a_daily_slot_in_the_repeated_autumn_hour_runs_once() -> None:
    # Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    start = at(BERLIN, 2026, 10, 25, 2, 0)
    app, clock = make_app(start)
    runs: Runs = []
    declare_tick(app, runs, cron="30 2 * * *", tz="Europe/Berlin")
    async with workers(app, 1):
        await advance_to(clock, start + 2.5 * 3600, 60)
    assert [s for _, s in runs] == [at(BERLIN, 2026, 10, 25, 2, 30, fold=0)]


async def test_an_hourly_pattern_runs_in_both_passes_of_the_repeated_hour() -> None:
    # "*/30 * * * *" names instants, not a time of day: each of the four is a real half hour.
    start = at(BERLIN, 2026, 10, 25, 1, 50)
    app, clock = make_app(start)
    runs: Runs = []
    declare_tick(app, runs, cron="*/30 * * * *", tz="Europe/Berlin")
    async with workers(app, 1):
        await advance_to(clock, at(BERLIN, 2026, 10, 25, 3, 0, fold=0), 60)
    assert [s for _, s in runs] == [
        at(BERLIN, 2026, 10, 25, 2, 0, fold=0),
        at(BERLIN, 2026, 10, 25, 2, 30, fold=0),
        at(BERLIN, 2026, 10, 25, 2, 0, fold=1),
        at(BERLIN, 2026, 10, 25, 2, 30, fold=1),
        at(BERLIN, 2026, 10, 25, 3, 0),
    ]


async def test_new_york_spring_forward_and_fall_back() -> None:
    app, _ = make_app(0)

    @app.periodic(cron="30 2 * * *", tz="America/New_York")
    @app.task(name="job")
    async def nightly() -> None: ...

    schedule = app.periodic_schedules["job"]
    new_york = ZoneInfo("America/New_York")
    spring = schedule.slots_between(at(new_york, 2026, 3, 7, 12), at(new_york, 2026, 3, 9, 12))
    assert [datetime.fromtimestamp(s, new_york).strftime("%d %H:%M %Z") for s in spring] == [
        "08 03:00 EDT",  # 02:30 does not exist on the 8th: right after the gap
        "09 02:30 EDT",
    ]
    autumn = schedule.slots_between(at(new_york, 2026, 10, 31, 12), at(new_york, 2026, 11, 2, 12))
    assert [datetime.fromtimestamp(s, new_york).strftime("%d %H:%M %Z") for s in autumn] == [
        "01 02:30 EST",  # 02:30 exists once on the 1st (the repeat is 01:00-02:00)
        "02 02:30 EST",
    ]


# -- pause and resume ------------------------------------------------------------------------


async def test_pause_stops_every_worker_and_resume_starts_from_the_next_slot() -> None:
    t0 = 1_700_000_000.0
    app, clock = make_app(t0)
    runs: Runs = []
    declare_tick(app, runs, every=1)
    async with workers(app, 2):
        await advance_to(clock, t0 + 3, 0.5)
        await app.pause_schedule("tick")
        [info] = await app.schedules()
        assert info.paused and info.next_slot is None
        await advance_to(clock, t0 + 10, 0.5)
        await app.resume_schedule("tick")
        await advance_to(clock, t0 + 13, 0.5)
    slots = [s - t0 for _, s in runs]
    # Slots already enqueued when the pause came (at most LOOKAHEAD_S ahead) still run.
    assert slots == [1.0, 2.0, 3.0, 4.0, 11.0, 12.0, 13.0]
    [info] = await app.schedules()
    assert not info.paused
    assert info.last_slot is not None and info.last_slot.timestamp() >= t0 + 13


async def test_schedules_lists_every_declared_schedule() -> None:
    t0 = at(MOSCOW, 2026, 6, 1, 12, 1)
    app, _ = make_app(t0)

    @app.periodic(cron="*/5 * * * *", tz="Europe/Moscow", name="report")
    @app.periodic(every=timedelta(milliseconds=500), name="beat")
    @app.task(name="job")
    async def job() -> None: ...

    beat, report = await app.schedules()
    assert (beat.name, beat.task, beat.every_s, beat.cron, beat.tz) == (
        "beat",
        "job",
        0.5,
        None,
        "UTC",
    )
    assert (report.cron, report.tz, report.last_slot, report.paused) == (
        "*/5 * * * *",
        "Europe/Moscow",
        None,
        False,
    )
    assert report.next_slot == datetime(2026, 6, 1, 12, 5, tzinfo=MOSCOW)
    with pytest.raises(ScheduleNotFound, match=r"'nope'.*declared: beat, report"):
        await app.pause_schedule("nope")


# -- missed slots ----------------------------------------------------------------------------


async def outage(catch_up: int) -> list[float]:
    """Slots run, relative to t0, for an every-minute schedule whose workers were all down
    from t0 + 2 min to t0 + 62.5 min."""
    t0 = 1_700_000_040.0  # on a minute
    app, clock = make_app(t0)
    runs: Runs = []
    declare_tick(app, runs, every=60, catch_up=catch_up)
    async with workers(app, 2):
        await advance_to(clock, t0 + 120, 10)
    await clock.advance(3630)  # every worker down for an hour, back at t0 + 62.5 min
    async with workers(app, 2):
        await advance_to(clock, t0 + 64 * 60, 10)
    return [(s - t0) / 60 for _, s in runs]


async def test_missed_slots_are_skipped_by_default() -> None:
    assert await outage(catch_up=0) == [1, 2, 63, 64]


async def test_catch_up_runs_the_last_n_missed_slots_oldest_first_once() -> None:
    assert await outage(catch_up=3) == [1, 2, 60, 61, 62, 63, 64]


# -- refused at decoration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({}, "exactly one of cron= and every="),
        ({"cron": "* * * * *", "every": 5}, "exactly one of cron= and every="),
        ({"cron": "61 * * * *"}, "invalid cron expression '61 \\* \\* \\* \\*'"),
        ({"cron": "* * * *"}, "invalid cron expression"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"every": 0}, "every= must be > 0"),
        ({"every": timedelta(seconds=-1)}, "every= must be > 0"),
        ({"every": "5s"}, "every= must be a timedelta or seconds"),
        ({"every": 5, "tz": "UTC"}, "tz= applies to cron= only"),
        ({"every": 5, "catch_up": -1}, "catch_up must be an integer from 0"),
        ({"every": 5, "catch_up": 10_000}, "catch_up must be an integer from 0"),
    ],
)
def test_a_bad_declaration_is_refused_at_decoration(declared: dict[str, Any], message: str) -> None:
    app, _ = make_app(0)

    @app.task(name="job")
    async def job() -> None: ...

    with pytest.raises(TaskRegistrationError, match=message):
        app.periodic(**declared)(job)
    assert not app.periodic_schedules


def test_periodic_must_sit_above_app_task() -> None:
    app, _ = make_app(0)

    async def plain() -> None: ...

    with pytest.raises(TaskRegistrationError, match=r"above @app\.task"):
        app.periodic(every=1)(plain)  # type: ignore[arg-type]
    other, _ = make_app(0)
    foreign = other.task(plain)
    with pytest.raises(TaskRegistrationError, match="a task of app 'periodic'"):
        app.periodic(every=1)(foreign)


def test_arguments_that_do_not_fit_the_task_are_refused_at_decoration() -> None:
    app, _ = make_app(0)

    @app.task(name="job")
    async def job(n: int) -> None: ...

    with pytest.raises(InvalidArguments):
        app.periodic(every=1)(job)


def test_a_schedule_name_is_declared_once() -> None:
    app, _ = make_app(0)

    @app.periodic(every=1)
    @app.task(name="job")
    async def job() -> None: ...

    with pytest.raises(TaskRegistrationError, match="already declared"):
        app.periodic(every=2)(job)
    app.periodic(every=2, name="job-slow")(job)
    assert sorted(app.periodic_schedules) == ["job", "job-slow"]
