"""Conformance: a periodic slot enqueued by several apps at once (several workers' schedulers)
ends as one task on every backend, and the schedule's record is decided once."""

from __future__ import annotations

from datetime import timedelta

import anyio

from taskflow import QueueTasks, TaskStatus
from taskflow._schedule import slot_id
from taskflow._scheduler import Scheduler
from taskflow.testing import FakeClock

APPS = 4


def beat_app(url: str, clock: FakeClock) -> QueueTasks:
    app = QueueTasks("beat", broker=url, clock=clock)

    @app.periodic(every=timedelta(milliseconds=500), catch_up=2)
    @app.task(name="generate")
    async def generate() -> None: ...

    return app


async def advance_together(apps: list[QueueTasks]) -> None:
    """Every app's scheduler takes one pass over the schedule, all at once."""
    async with anyio.create_task_group() as tg:
        for app in apps:
            tg.start_soon(Scheduler(app).advance, app.periodic_schedules["generate"])


async def test_a_slot_enqueued_by_several_schedulers_at_once_is_one_task(
    backend_url: str, clock: FakeClock
) -> None:
    clock_start = clock.time()
    apps = [beat_app(backend_url, clock) for _ in range(APPS)]
    with anyio.fail_after(30):
        for app in apps:
            await app.open()
        try:
            await advance_together(apps)  # a fresh schedule: slots in the next LOOKAHEAD_S
            await clock.advance(1.0)
            await advance_together(apps)
            await clock.advance(10.0)  # every scheduler late: catch up 2 missed slots
            await advance_together(apps)
            [stats] = await apps[0].broker.stats(["default"], now=clock.time())
            [info] = await apps[0].schedules()
        finally:
            for app in apps:
                await app.close()
    schedule = apps[0].periodic_schedules["generate"]
    expected = schedule.slots_between(clock_start, clock_start + 2.0)
    late = clock_start + 11.0
    expected += schedule.slots_between(late - 3.0, late - 2.0)[-2:]
    expected += schedule.slots_between(late - 2.0, late + 1.0)
    assert stats.queued + stats.scheduled == len(expected)
    assert info.last_slot is not None and info.last_slot.timestamp() == expected[-1]
    async with apps[0] as app:
        for slot in expected:
            record = await app.get(slot_id("generate", slot))
            assert record is not None, slot
            assert record.status in (TaskStatus.QUEUED, TaskStatus.SCHEDULED)
