"""The JSON shapes of the web API (see WEB_API.md): what a task, a task summary, a schedule
look like to a page. Raw values only: no markup, no escaping. Where the CLI's ``--json``
already has a shape (a record, a worker, a failed attempt, an artifact) it is reused."""

from __future__ import annotations

from typing import Any

import msgspec

from .._message import Event, TaskRecord, decode_value
from .._schedule_state import ScheduleInfo
from ..cli._show import record_data

__all__ = ["event_data", "schedule_data", "task_data", "task_summary"]


def task_summary(record: TaskRecord) -> dict[str, Any]:
    """One line of a task list: who, where, how far, how it ended."""
    progress = record.progress
    error = record.error
    return {
        "id": record.id,
        "name": record.name,
        "queue": record.queue,
        "status": record.status.value,
        "attempts": record.attempts,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "progress": None
        if progress is None
        else {"done": progress.done, "total": progress.total, "message": progress.message},
        "error_type": None if error is None else error.type,
        "error_message": None if error is None else error.message,
        "flow_id": record.flow_id,
        "node": record.node,
        "order_id": record.order_id,
    }


def task_data(record: TaskRecord) -> dict[str, Any]:
    """A whole task: the record as ``taskflow status --json`` shows it, its arguments and its
    flow links."""
    args, kwargs = _arguments(record.payload)
    return {
        **record_data(record),
        "args": args,
        "kwargs": kwargs,
        "flow_id": record.flow_id,
        "node": record.node,
        "waits_for": list(record.waits_for),
    }


def _arguments(payload: bytes | None) -> tuple[Any, Any]:
    """The arguments a task was sent with, as JSON values (bytes as base64 text); (None, None)
    when they cannot be read."""
    try:
        args, kwargs = decode_value(payload or b"")
        return msgspec.to_builtins(args), msgspec.to_builtins(kwargs)
    except (ValueError, TypeError):  # msgspec's errors are ValueErrors; a wrong shape too
        return None, None


def event_data(event: Event) -> dict[str, Any]:
    """An event of a queue's stream, its cursor an opaque string."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    return data


def schedule_data(info: ScheduleInfo) -> dict[str, Any]:
    """A declared schedule and its state (slots as ISO 8601 text in the schedule's zone)."""
    return {
        "name": info.name,
        "task": info.task,
        "cron": info.cron,
        "every_s": info.every_s,
        "tz": info.tz,
        "next_slot": None if info.next_slot is None else info.next_slot.isoformat(),
        "last_slot": None if info.last_slot is None else info.last_slot.isoformat(),
        "paused": info.paused,
    }
