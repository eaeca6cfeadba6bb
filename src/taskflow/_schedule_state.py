"""The per-schedule record in the backend's key-value space, shared by every worker.

One record per schedule, in namespace ``periodic`` under the schedule's name: the last slot
enqueued and whether the schedule is paused. Every change is a compare-and-set on the record's
version, so of several workers deciding the same thing at once (the next slot, the catch-up
after an outage) one decides and the others read its decision.

What does not live here: slot arithmetic (`_schedule.py`), the enqueue loop (`_scheduler.py`).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

import msgspec

from ._schedule import Schedule
from .abc import Coordination

__all__ = [
    "NAMESPACE",
    "ScheduleInfo",
    "ScheduleRecord",
    "read_record",
    "schedule_info",
    "set_paused",
    "write_record",
]

NAMESPACE: Final = "periodic"


class ScheduleRecord(msgspec.Struct, frozen=True, array_like=True):
    """What the backend keeps of one schedule (times in epoch seconds).

    Attributes:
        through: Every slot at or before this time is decided (enqueued, or skipped as
            missed or paused); None for a schedule no worker has looked at yet.
        last_slot: The last slot enqueued (None before the first).
        paused: Whether the schedule is paused.
    """

    through: float | None = None
    last_slot: float | None = None
    paused: bool = False


_encode: Final = msgspec.msgpack.Encoder().encode
_decode: Final = msgspec.msgpack.Decoder(ScheduleRecord).decode


async def read_record(coordination: Coordination, name: str) -> tuple[ScheduleRecord, int]:
    """The schedule's record and its version (0: none yet, a fresh schedule)."""
    found = await coordination.kv_get(NAMESPACE, name)
    if found is None:
        return ScheduleRecord(), 0
    return _decode(found.value), found.version


async def write_record(
    coordination: Coordination, name: str, record: ScheduleRecord, version: int
) -> bool:
    """Replace the record if it is still at `version`; False if another worker changed it."""
    written = await coordination.kv_set(NAMESPACE, name, _encode(record), expect_version=version)
    return written is not None


async def set_paused(coordination: Coordination, name: str, paused: bool, now: float) -> None:
    """Pause or resume a schedule. A resume decides every slot up to `now` (skipped), so the
    slots that fell due while it was paused are not caught up (a pause is deliberate)."""
    while True:
        record, version = await read_record(coordination, name)
        through = record.through
        if not paused and record.paused:
            through = now if through is None else max(through, now)
        changed = ScheduleRecord(through=through, last_slot=record.last_slot, paused=paused)
        if await write_record(coordination, name, changed, version):
            return


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """One schedule as `QueueTasks.schedules` lists it.

    Attributes:
        name: The schedule's name.
        task: The task each slot runs.
        cron: The cron expression, or None.
        every_s: The interval in seconds, or None.
        tz: The time zone of a cron schedule (``"UTC"`` for an interval).
        next_slot: The next slot not enqueued yet (None while paused), in `tz`.
        last_slot: The last slot enqueued, in `tz` (None before the first).
        paused: Whether the schedule is paused.
    """

    name: str
    task: str
    cron: str | None
    every_s: float | None
    tz: str
    next_slot: datetime | None
    last_slot: datetime | None
    paused: bool


def schedule_info(schedule: Schedule, record: ScheduleRecord, now: float) -> ScheduleInfo:
    """What `QueueTasks.schedules` shows of `schedule` given its record."""
    zone = ZoneInfo(schedule.tz)
    last = record.last_slot
    next_slot = None if record.paused else schedule.next_after(max(record.through or now, now))
    return ScheduleInfo(
        name=schedule.name,
        task=schedule.task,
        cron=schedule.cron,
        every_s=schedule.every_s,
        tz=schedule.tz,
        next_slot=None if next_slot is None else datetime.fromtimestamp(next_slot, zone),
        last_slot=None if last is None else datetime.fromtimestamp(last, zone),
        paused=record.paused,
    )
