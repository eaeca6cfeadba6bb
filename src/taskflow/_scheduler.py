"""`Scheduler`: the small loop in every worker process that enqueues periodic tasks' slots.

There is no beat process to keep single. Every worker runs this loop (as a worker service, see
`QueueTasks.periodic`), one task per schedule, and each slot still runs once:

1. read the schedule's record (`_schedule_state.py`): up to when its slots are decided,
   paused or not;
2. pick the slots due for enqueueing: those up to ``now + LOOKAHEAD_S`` after that time,
   plus, after an outage, up to ``catch_up`` of the slots missed (older than ``GRACE_S``);
3. enqueue them in one backend call, each with the task id `slot_id` (schedule name + slot
   time) and an eta of the slot time, so the claim path starts it when it is due, without
   polling; the backend's id dedup lets exactly one enqueue of a slot through, whichever
   workers race;
4. move the record past them with a compare-and-set (a worker that loses re-reads), and
   sleep until the next slot is ``LOOKAHEAD_S`` away.

Enqueue comes before the record moves: a worker killed between the two leaves a slot that the
next worker enqueues again, and dedup makes that a no-op, so no slot is lost or doubled.

What does not live here: slot arithmetic (`_schedule.py`), the record (`_schedule_state.py`),
the decorator and `schedules()` / `pause_schedule()` (`_app.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final, Protocol

import anyio

from ._clock import Clock
from ._options import TaskOptions
from ._schedule import Schedule, slot_id
from ._schedule_state import ScheduleRecord, read_record, write_record
from ._sending import Sender
from ._task import TaskDefinition
from .abc import Broker, Coordination

__all__ = ["GRACE_S", "LOOKAHEAD_S", "SLOT_HEADER", "Scheduler", "SchedulerApp"]

logger = logging.getLogger("taskflow.periodic")

#: How long before its time a slot is enqueued (as a scheduled message due at the slot), so a
#: slot starts on time even if the loop is a little late. A pause stops the slots not enqueued
#: yet: at most this far ahead.
LOOKAHEAD_S: Final = 1.0
#: A slot this late is still on time; older ones are "missed" and follow ``catch_up``.
GRACE_S: Final = 2.0
#: The longest the loop sleeps (a cron slot a month away is looked at again before then).
MAX_SLEEP_S: Final = 60.0
#: After a failed pass (the backend unreachable), the loop tries again this much later.
RETRY_S: Final = 1.0
#: Most slots one enqueue carries (a 1 ms interval); the next pass takes the rest.
MAX_SLOTS_PER_PASS: Final = 1000
#: The header each run carries: the slot it runs for (epoch seconds, as text).
SLOT_HEADER: Final = "periodic-slot"


class SchedulerApp(Protocol):
    """What the scheduler uses of its app (a `QueueTasks`)."""

    clock: Clock
    broker: Broker
    coordination: Coordination
    sender: Sender

    @property
    def tasks(self) -> Mapping[str, TaskDefinition]:
        """Registered tasks by name."""
        ...

    @property
    def periodic_schedules(self) -> Mapping[str, Schedule]:
        """Declared schedules by name."""
        ...


class Scheduler:
    """Enqueues every declared schedule's slots, once each across all workers (see the module
    docstring). `run` is the loop; `advance` is one pass over one schedule."""

    def __init__(self, app: SchedulerApp) -> None:
        self.app = app

    async def run(self) -> None:
        """One loop per schedule, until cancelled."""
        async with anyio.create_task_group() as tg:
            for schedule in self.app.periodic_schedules.values():
                tg.start_soon(self._loop, schedule, name=f"taskflow-periodic-{schedule.name}")

    async def _loop(self, schedule: Schedule) -> None:
        clock = self.app.clock
        while True:
            try:
                wake = await self.advance(schedule)
            except Exception:
                logger.exception("periodic %r: a pass failed; trying again", schedule.name)
                wake = clock.time() + RETRY_S
            await clock.sleep(min(wake - clock.time(), MAX_SLEEP_S))

    async def advance(self, schedule: Schedule) -> float:
        """Enqueue what is due of `schedule` now; returns when to look at it again."""
        coordination = self.app.coordination
        while True:
            now = self.app.clock.time()
            record, version = await read_record(coordination, schedule.name)
            if record.paused:  # look again when the next slot would be enqueued
                return schedule.next_after(now + LOOKAHEAD_S) - LOOKAHEAD_S
            slots = due_slots(schedule, record.through, now)
            if not slots:
                if record.through is None:  # a fresh schedule: it starts after now
                    await write_record(coordination, schedule.name, _started(now), version)
                return schedule.next_after(max(record.through or now, now)) - LOOKAHEAD_S
            await self._enqueue(schedule, slots, now)
            moved = ScheduleRecord(through=slots[-1], last_slot=slots[-1])
            if await write_record(coordination, schedule.name, moved, version):
                logger.debug("periodic %r: enqueued %d slot(s)", schedule.name, len(slots))
            # Moved or not (another worker moved it first), look again: more may be due.

    async def _enqueue(self, schedule: Schedule, slots: list[float], now: float) -> None:
        app = self.app
        definition = app.sender.definition(schedule.task)
        messages = [
            app.sender.build_message(
                definition,
                schedule.args,
                schedule.kwargs,
                TaskOptions.of(_slot_options(schedule, slot), task=schedule.task),
                now,
            )
            for slot in slots
        ]
        await app.broker.enqueue(messages, now=now)


def _started(now: float) -> ScheduleRecord:
    return ScheduleRecord(through=now)


def _slot_options(schedule: Schedule, slot: float) -> dict[str, object]:
    options: dict[str, object] = {
        "task_id": slot_id(schedule.name, slot),
        "eta": slot,
        "headers": {SLOT_HEADER: repr(slot)},
    }
    if schedule.queue is not None:
        options["queue"] = schedule.queue
    return options


def due_slots(schedule: Schedule, through: float | None, now: float) -> list[float]:
    """The slots to enqueue now, oldest first: every slot after `through` (the record's: all
    slots up to it are decided) up to ``now + LOOKAHEAD_S``, less the missed ones (older than
    ``now - GRACE_S``) beyond the schedule's ``catch_up``. A fresh schedule (`through` None)
    starts after `now`."""
    horizon = now + LOOKAHEAD_S
    on_time = now - GRACE_S
    if through is None or through >= on_time:
        start = now if through is None else through
        return schedule.slots_between(start, horizon)[:MAX_SLOTS_PER_PASS]
    missed = schedule.slots_between(through, on_time, keep=schedule.catch_up)
    recent = schedule.slots_between(on_time, horizon)[:MAX_SLOTS_PER_PASS]
    return missed + recent
