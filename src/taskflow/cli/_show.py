"""How the CLI shows tasks and queues: readable text for people, JSON for scripts.

JSON output is one document per line (``--json``): a task record with its result and yielded
values decoded and its times in seconds since the epoch; people get local times and a progress
bar.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

import msgspec

from .._message import Progress, QueueStats, TaskRecord, decode_value

__all__ = [
    "display_name",
    "emit_json",
    "progress_line",
    "record_data",
    "record_text",
    "stats_data",
    "stats_table",
]

_BAR_WIDTH = 24


def emit_json(data: Any, out: TextIO | None = None) -> None:
    """Print `data` as one line of JSON."""
    stream = out if out is not None else sys.stdout
    stream.write(msgspec.json.encode(data, enc_hook=repr).decode() + "\n")
    stream.flush()


def _decoded(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return decode_value(data)
    except Exception:  # not ours to judge: show what is there
        return repr(data)


def record_data(record: TaskRecord) -> dict[str, Any]:
    """A task record as JSON-ready data (the ``--json`` form of ``status``)."""
    progress = record.progress
    error = record.error
    return {
        "id": record.id,
        "name": record.name,
        "queue": record.queue,
        "status": record.status.value,
        "attempts": record.attempts,
        "retries": record.retries,
        "priority": record.priority,
        "created_at": record.created_at,
        "eta": record.eta,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "progress": None
        if progress is None
        else {"done": progress.done, "total": progress.total, "message": progress.message},
        "result": _decoded(record.result),
        "result_expired": record.result_expired,
        "error": None
        if error is None
        else {"type": error.type, "message": error.message, "traceback": error.traceback},
        "yields": [_decoded(value) for value in record.yields],
        "cancel_requested": record.cancel_requested,
        "parent_id": record.parent_id,
        "order_id": record.order_id,
        "requeued_from": record.requeued_from,
        "worker_id": record.worker_id,
        "undecodable": record.undecodable,
    }


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return (
        datetime.fromtimestamp(timestamp).astimezone().isoformat(sep=" ", timespec="milliseconds")
    )


def _progress_text(progress: Progress) -> str:
    if progress.total:
        share = min(max(progress.done / progress.total, 0.0), 1.0)
        filled = round(share * _BAR_WIDTH)
        text = (
            f"[{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] "
            f"{progress.done}/{progress.total} {share:4.0%}"
        )
    else:
        text = f"{progress.done} done"
    return f"{text} {progress.message}" if progress.message else text


def progress_line(record: TaskRecord) -> str:
    """One line for a task being watched: its status, and its progress as a bar."""
    if record.progress is None:
        return record.status.value
    return f"{record.status.value:<9} {_progress_text(record.progress)}"


def _value_text(value: Any) -> str:
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, ValueError):
        return repr(value)


def display_name(record: TaskRecord) -> str:
    """A record's task name for people; says so when its stored message could not be decoded."""
    if record.undecodable:
        return f"{record.name or '?'}  (stored message undecodable)"
    return record.name


def record_text(record: TaskRecord) -> str:
    """A task record for people: what it is, where it is, and how it ended."""
    rows = _identity_rows(record) + _time_rows(record) + _outcome_rows(record)
    return "\n".join(f"{label:<9} {value}".rstrip() for label, value in rows)


Rows = list[tuple[str, str]]


def _identity_rows(record: TaskRecord) -> Rows:
    attempts = f"attempt {record.attempts} of {record.retries + 1}"
    rows = [
        ("task", f"{record.id}  {display_name(record)}"),
        ("queue", f"{record.queue}" + (f"  priority {record.priority}" if record.priority else "")),
        ("status", f"{record.status.value}  ({attempts})"),
    ]
    if record.cancel_requested and not record.status.terminal:
        rows.append(("", "cancel requested"))
    if record.progress is not None:
        rows.append(("progress", _progress_text(record.progress)))
    return rows


def _time_rows(record: TaskRecord) -> Rows:
    rows = [("created", _when(record.created_at))]
    if record.eta is not None:
        rows.append(("eta", _when(record.eta)))
    if record.started_at is not None:
        rows.append(("started", _when(record.started_at)))
    if record.finished_at is not None:
        took = ""
        if record.started_at is not None:
            took = f"  (ran {record.finished_at - record.started_at:.3f} s)"
        rows.append(("finished", _when(record.finished_at) + took))
    return rows


def _outcome_rows(record: TaskRecord) -> Rows:
    rows: Rows = []
    if record.result_expired:
        rows.append(("result", "expired (older than the result TTL)"))
    elif record.result is not None:
        rows.append(("result", _value_text(_decoded(record.result))))
    if record.yields:
        rows.append(("yields", _value_text([_decoded(v) for v in record.yields])))
    if record.error is not None:
        rows.append(("error", f"{record.error.type}: {record.error.message}"))
        rows += [("", line) for line in record.error.traceback.rstrip().splitlines()]
    if record.requeued_from is not None:
        rows.append(("requeued", f"from {record.requeued_from}"))
    return rows


def stats_data(stats: QueueStats) -> dict[str, Any]:
    """One queue's counts as JSON-ready data (the ``--json`` form of ``stats``)."""
    return {
        "queue": stats.queue,
        "ready": stats.queued,
        "scheduled": stats.scheduled,
        "running": stats.running,
        "dead": stats.dead,
        "finished_last_minute": stats.finished_last_minute,
    }


def stats_table(rows: Sequence[QueueStats]) -> str:
    """Queue counts as an aligned table."""
    header = ("QUEUE", "READY", "SCHEDULED", "RUNNING", "DEAD", "FINISHED/MIN")
    cells = [header] + [
        (
            s.queue,
            str(s.queued),
            str(s.scheduled),
            str(s.running),
            str(s.dead),
            str(s.finished_last_minute),
        )
        for s in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join([first, *rest]))
    return "\n".join(lines)
