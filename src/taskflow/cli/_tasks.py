"""``taskflow status``, ``send`` and ``cancel``: one task, or a few, from a shell.

``status --watch`` follows a task live until it ends, driven by pushes (`Storage.wait` and the
queue's event stream), never by polling: each event of the task re-reads its record and
redraws the line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio

from .._app import QueueTasks
from .._message import CancelResult, TaskRecord, TaskStatus
from .._options import CallOptions
from ..abc import LATEST
from ._common import shared_app
from ._errors import CliError, ExitCode
from ._show import emit_json, progress_line, record_data, record_text

__all__ = ["cancel", "send", "status"]

_ENDED_BADLY = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED})

_CANCEL_TEXT = {
    CancelResult.CANCELLED: "cancelled",
    CancelResult.REQUESTED: "cancel requested: it is running; its worker stops it at its next "
    "lease renewal",
    CancelResult.ALREADY_TERMINAL: "already ended; nothing to cancel",
    CancelResult.NOT_FOUND: "not found",
}


def _exit_for(record: TaskRecord) -> int:
    return ExitCode.TASK_FAILED if record.status in _ENDED_BADLY else ExitCode.OK


def _not_found(app: QueueTasks, task_id: str) -> CliError:
    return CliError(
        ExitCode.NOT_FOUND,
        f"no task with id {task_id!r} on {app.storage.describe()}: check the id, and that the "
        "app names the backend its producers use",
    )


# -- status -----------------------------------------------------------------------------------


def status(args: argparse.Namespace) -> int:
    """``taskflow status``: show one task, or follow it until it ends (``--watch``)."""
    app = shared_app(args.app, "status")
    return anyio.run(_status, app, args.task_id, args.watch, args.json)


async def _status(app: QueueTasks, task_id: str, watch: bool, as_json: bool) -> int:
    async with app:
        record = await app.get(task_id)
        if record is None:
            raise _not_found(app, task_id)
        if watch and not record.status.terminal:
            record = await _watch(app, record, as_json)
        elif as_json:
            emit_json(record_data(record))
        else:
            print(record_text(record))
    return _exit_for(record)


async def _watch(app: QueueTasks, record: TaskRecord, as_json: bool) -> TaskRecord:
    """Show `record` and each change of it until the task ends; returns the final record.

    A terminal gets one line redrawn in place (status and progress bar); other outputs get a
    line per change (JSON: the whole record). Both waits are pushed: the task's end by
    `Storage.wait`, which cannot miss it (its final record is read then), and its changes on
    the way by the queue's event stream, followed from now (`LATEST`, no replay); an event of
    the task re-reads its record.
    """
    live = sys.stdout.isatty() and not as_json
    show = _watch_printer(live, as_json)
    show(record)
    final: TaskRecord | None = None
    async with anyio.create_task_group() as tg:

        async def until_the_end() -> None:
            nonlocal final
            await app.storage.wait(record.id, timeout=None, now=app.clock.time())
            final = await app.get(record.id)
            tg.cancel_scope.cancel()

        tg.start_soon(until_the_end)
        async for event in app.storage.follow_events(record.queue, after=LATEST):
            if event.task_id != record.id:
                continue
            latest = await app.get(record.id)
            if latest is not None and latest != record and not latest.status.terminal:
                record = latest
                show(record)
    assert final is not None
    if final != record:
        show(final)
    if live:
        print()
    if not as_json:
        print(record_text(final))
    return final


def _watch_printer(live: bool, as_json: bool) -> Any:
    def show(record: TaskRecord) -> None:
        if as_json:
            emit_json(record_data(record))
        elif live:
            sys.stdout.write("\r\x1b[K" + progress_line(record))
            sys.stdout.flush()
        else:
            print(progress_line(record), flush=True)

    return show


# -- send -------------------------------------------------------------------------------------


def _json_argument(raw: str, option: str, kind: type, example: str) -> Any:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CliError(
            ExitCode.USAGE, f"{option} {raw!r} is not JSON ({exc}); for example {example}"
        ) from None
    if not isinstance(value, kind):
        what = "an array" if kind is list else "an object"
        raise CliError(
            ExitCode.USAGE, f"{option} must be {what} in JSON, got {raw!r}; for example {example}"
        )
    return value


def send(args: argparse.Namespace) -> int:
    """``taskflow send``: send a task by name with JSON arguments; print its id."""
    task_args = _json_argument(args.args, "--args", list, "--args '[2, 3]'")
    task_kwargs = _json_argument(args.kwargs, "--kwargs", dict, """--kwargs '{"x": 1}'""")
    app = shared_app(args.app, "send")
    options: CallOptions = {}
    if args.queue is not None:
        options["queue"] = args.queue
    if args.delay is not None:
        options["delay"] = args.delay
    if args.priority is not None:
        options["priority"] = args.priority
    return anyio.run(_send, app, args.task, task_args, task_kwargs, options, args.json)


async def _send(
    app: QueueTasks,
    name: str,
    task_args: list[Any],
    task_kwargs: dict[str, Any],
    options: CallOptions,
    as_json: bool,
) -> int:
    async with app:
        # An unknown name is NOT_FOUND, arguments or options that do not fit are USAGE (classify).
        handle = await app.add_task(name, args=task_args, kwargs=task_kwargs, **options)
    if as_json:
        emit_json({"id": handle.task_id, "task": name})
    else:
        print(handle.task_id)
    return ExitCode.OK


# -- cancel -----------------------------------------------------------------------------------


def cancel(args: argparse.Namespace) -> int:
    """``taskflow cancel``: cancel tasks (waiting ones at once, running ones by request)."""
    app = shared_app(args.app, "cancel")
    return anyio.run(_cancel, app, args.task_ids, args.json)


async def _cancel(app: QueueTasks, task_ids: list[str], as_json: bool) -> int:
    async with app:
        results = await app.broker.cancel(task_ids, now=app.clock.time())
    for task_id, result in zip(task_ids, results, strict=True):
        if as_json:
            emit_json({"id": task_id, "result": result.value})
        else:
            print(f"{task_id}: {_CANCEL_TEXT[result]}")
    if CancelResult.NOT_FOUND in results:
        return ExitCode.NOT_FOUND
    return ExitCode.OK
