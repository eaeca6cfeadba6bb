"""``taskflow schedules``: an app's periodic schedules, their next and last slot, and pausing or
resuming one for every worker.

What does not live here: the schedules themselves (`QueueTasks.periodic`, `_periodic.py`).
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

import anyio

from .._app import QueueTasks
from .._schedule_state import ScheduleInfo
from ._common import shared_app
from ._errors import ExitCode
from ._show import emit_json

__all__ = ["schedule_data", "schedules", "schedules_table"]


def schedules(args: argparse.Namespace) -> int:
    """``taskflow schedules``: list the schedules, after pausing or resuming one if asked."""
    app = shared_app(args.app, "schedules")
    return anyio.run(_schedules, app, args.pause, args.resume, args.json)


async def _schedules(app: QueueTasks, pause: str | None, resume: str | None, as_json: bool) -> int:
    async with app:
        if pause is not None:
            await app.pause_schedule(pause)
        if resume is not None:
            await app.resume_schedule(resume)
        infos = await app.schedules()
    if as_json:
        for info in infos:
            emit_json(schedule_data(info))
    else:
        print(schedules_table(infos))
    return ExitCode.OK


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def schedule_data(info: ScheduleInfo) -> dict[str, Any]:
    """One schedule as the JSON document ``--json`` prints."""
    return {
        "name": info.name,
        "task": info.task,
        "cron": info.cron,
        "every_s": info.every_s,
        "tz": info.tz,
        "next_slot": _when(info.next_slot),
        "last_slot": _when(info.last_slot),
        "paused": info.paused,
    }


def _show(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(sep=" ", timespec="milliseconds")


def schedules_table(infos: list[ScheduleInfo]) -> str:
    """Schedules as an aligned table."""
    if not infos:
        return "no schedule is declared (@app.periodic)"
    header = ("SCHEDULE", "TASK", "WHEN", "TZ", "NEXT SLOT", "LAST SLOT", "PAUSED")
    cells: list[tuple[str, ...]] = [header]
    for info in infos:
        when = f"cron {info.cron}" if info.cron is not None else f"every {info.every_s:g}s"
        paused = "yes" if info.paused else "no"
        cells.append(
            (
                info.name,
                info.task,
                when,
                info.tz,
                _show(info.next_slot),
                _show(info.last_slot),
                paused,
            )
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    paused_count = sum(info.paused for info in infos)
    lines.append(f"{len(infos)} schedule(s), {paused_count} paused")
    return "\n".join(lines)
