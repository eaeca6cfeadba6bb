"""``taskflow workers`` and ``taskflow errors``: the live workers of an app and its failed
attempts, read from the backend (`QueueTasks.workers`, `QueueTasks.errors`).

What does not live here: the registry and the error log themselves (`taskflow.abc.Coordination`,
`taskflow.abc.Storage`), the live view (``taskflow monitor``).
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta
from typing import Any, Final

import anyio

from .._app import QueueTasks
from .._message import FailedAttempt, WorkerInfo
from ._common import shared_app
from ._errors import CliError, ExitCode
from ._show import emit_json

__all__ = ["errors", "errors_lines", "parse_since", "workers", "workers_table"]

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION: Final = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


# -- taskflow workers ---------------------------------------------------------------------


def workers(args: argparse.Namespace) -> int:
    """``taskflow workers``: every live worker of the app, in every process and host."""
    app = shared_app(args.app, "workers")
    return anyio.run(_workers, app, args.json)


async def _workers(app: QueueTasks, as_json: bool) -> int:
    async with app:
        now = app.clock.time()
        entries = await app.workers()
    if as_json:
        for entry in entries:
            emit_json(worker_data(entry, now))
    else:
        print(workers_table(entries, now))
    return ExitCode.OK


def worker_data(entry: WorkerInfo, now: float) -> dict[str, Any]:
    """One worker as the JSON document ``--json`` prints."""
    return {
        "id": entry.id,
        "host": entry.host,
        "pid": entry.pid,
        "queues": list(entry.queues),
        "concurrency": entry.concurrency,
        "roles": list(entry.roles),
        "processed": entry.processed,
        "failed": entry.failed,
        "running": entry.running,
        "started_at": entry.started_at,
        "heartbeat_at": entry.heartbeat_at,
        "expires_at": entry.expires_at,
        "heartbeat_age_s": round(now - entry.heartbeat_at, 3),
    }


def workers_table(entries: list[WorkerInfo], now: float) -> str:
    """Workers as an aligned table, one line each, and a total."""
    if not entries:
        return "no worker is running (none has sent a heartbeat within its entry's lifetime)"
    header = ("WORKER", "HOST", "PID", "QUEUES", "SLOTS", "RUNNING", "DONE", "FAILED", "ROLES")
    cells: list[tuple[str, ...]] = [header]
    for w in entries:
        cells.append(
            (
                w.id,
                w.host,
                str(w.pid),
                ",".join(w.queues),
                str(w.concurrency),
                str(w.running),
                str(w.processed),
                str(w.failed),
                ",".join(w.roles) or "-",
            )
        )
    lines = _aligned(cells)
    running = sum(w.running for w in entries)
    lines.append(f"{len(entries)} worker(s), {running} task(s) running")
    return "\n".join(lines)


# -- taskflow errors ----------------------------------------------------------------------


def errors(args: argparse.Namespace) -> int:
    """``taskflow errors``: failed attempts, newest first (retried ones included)."""
    since = parse_since(args.since)
    if args.limit < 1:
        raise CliError(ExitCode.USAGE, f"--limit must be at least 1, got {args.limit}")
    app = shared_app(args.app, "errors")
    return anyio.run(_errors, app, since, args)


async def _errors(app: QueueTasks, since: timedelta | datetime | None, args: Any) -> int:
    async with app:
        found = await app.errors(since=since, task=args.task, limit=args.limit)
    if args.json:
        for entry in found:
            emit_json(error_data(entry, with_traceback=args.traceback))
    else:
        print(errors_lines(found, with_traceback=args.traceback))
    return ExitCode.OK


def parse_since(raw: str | None) -> timedelta | datetime | None:
    """``--since``: a time back from now (``90s``, ``30m``, ``1h``, ``2d``) or an ISO 8601
    moment (``2026-12-04T10:00``, local time unless it names a zone).

    Raises:
        CliError: `ExitCode.USAGE` if it is neither.
    """
    if raw is None:
        return None
    match = _DURATION.match(raw.strip())
    if match:
        return timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        raise CliError(
            ExitCode.USAGE,
            f"--since {raw!r} is neither a duration nor a moment; give a number and a unit "
            "(90s, 30m, 1h, 2d) or an ISO 8601 time (2026-12-04T10:00)",
        ) from None


def error_data(entry: FailedAttempt, *, with_traceback: bool) -> dict[str, Any]:
    """One failed attempt as the JSON document ``--json`` prints."""
    data: dict[str, Any] = {
        "at": entry.at,
        "time": _when(entry.at),
        "task_id": entry.task_id,
        "task": entry.name,
        "queue": entry.queue,
        "attempt": entry.attempt,
        "retried": entry.retried,
        "worker_id": entry.worker_id,
        "type": entry.error.type,
        "message": entry.error.message,
        "last_frame": entry.last_frame,
    }
    if with_traceback:
        data["traceback"] = entry.error.traceback
    return data


def errors_lines(found: list[FailedAttempt], *, with_traceback: bool) -> str:
    """Failed attempts, newest first: one line each (and its traceback, if asked)."""
    if not found:
        return "no failed attempt in the error log"
    lines: list[str] = []
    for e in found:
        then = "retried" if e.retried else "failed"
        lines.append(
            f"{_when(e.at)}  {e.name} {e.task_id} attempt {e.attempt} ({then}) "
            f"on {e.worker_id or '?'}: {e.error.type}: {e.error.message}"
        )
        if with_traceback and e.error.traceback:
            lines.append(e.error.traceback.rstrip())
        elif e.last_frame:
            lines.append(f"    at {e.last_frame}")
    lines.append(f"{len(found)} failed attempt(s)")
    return "\n".join(lines)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at).isoformat(sep=" ", timespec="seconds")


def _aligned(cells: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
