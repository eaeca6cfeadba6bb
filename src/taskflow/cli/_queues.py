"""``taskflow stats``, ``purge``, ``dead-letters``, ``requeue`` and ``db upgrade``: queues and
their dead letters, and the PostgreSQL schema."""

from __future__ import annotations

import argparse
import sys

import anyio
import anyio.to_thread

from .._app import QueueTasks
from ._common import app_queues, parse_queues, shared_app
from ._errors import CliError, ExitCode
from ._show import display_name, emit_json, record_data, stats_data, stats_table

__all__ = ["db_upgrade", "dead_letters", "purge", "requeue", "stats"]

#: Dead letters read and requeued per backend call by ``requeue --all``.
_REQUEUE_PAGE = 500


# -- stats ------------------------------------------------------------------------------------


def stats(args: argparse.Namespace) -> int:
    """``taskflow stats``: each queue's tasks by state."""
    app = shared_app(args.app, "stats")
    queues = parse_queues(args.queues) or app_queues(app)
    return anyio.run(_stats, app, queues, args.json)


async def _stats(app: QueueTasks, queues: list[str], as_json: bool) -> int:
    async with app:
        rows = await app.broker.stats(queues, now=app.clock.time())
    if as_json:
        for row in rows:
            emit_json(stats_data(row))
    else:
        print(stats_table(rows))
    return ExitCode.OK


# -- purge ------------------------------------------------------------------------------------


def purge(args: argparse.Namespace) -> int:
    """``taskflow purge``: drop every waiting task of a queue, after asking (or ``--yes``)."""
    app = shared_app(args.app, "purge")
    if not args.yes and not sys.stdin.isatty():
        raise CliError(
            ExitCode.USAGE,
            f"purge drops every waiting task of queue {args.queue!r} and asks first, but there "
            "is no terminal to ask on: add --yes to purge without asking",
        )
    return anyio.run(_purge, app, args.queue, args.yes, args.json)


async def _purge(app: QueueTasks, queue: str, yes: bool, as_json: bool) -> int:
    async with app:
        if not yes:
            [counts] = await app.broker.stats([queue], now=app.clock.time())
            question = (
                f"Drop the {counts.queued} ready and {counts.scheduled} scheduled or retrying "
                f"task(s) of queue {queue!r} on {app.storage.describe()}? Running tasks go on. "
                "[y/N] "
            )
            answer = await anyio.to_thread.run_sync(input, question)
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing purged")
                return ExitCode.OK
        purged = await app.broker.purge(queue, now=app.clock.time())
    if as_json:
        emit_json({"queue": queue, "purged": purged})
    else:
        print(f"purged {purged} task(s) from queue {queue!r}")
    return ExitCode.OK


# -- dead letters -----------------------------------------------------------------------------


def dead_letters(args: argparse.Namespace) -> int:
    """``taskflow dead-letters``: list a queue's dead letters, newest first."""
    app = shared_app(args.app, "dead-letters")
    if args.limit < 1:
        raise CliError(ExitCode.USAGE, f"--limit must be >= 1, got {args.limit}")
    return anyio.run(_dead_letters, app, args.queue, args.limit, args.json)


async def _dead_letters(app: QueueTasks, queue: str | None, limit: int, as_json: bool) -> int:
    async with app:
        records = await app.dead_letters(queue, limit=limit)
    for record in records:
        if as_json:
            emit_json(record_data(record))
        else:
            error = f"{record.error.type}: {record.error.message}" if record.error else "-"
            name = display_name(record)
            print(f"{record.id}  {name}  attempts={record.attempts}  {error}")
    if not as_json:
        print(f"{len(records)} dead-lettered task(s)")
    return ExitCode.OK


def requeue(args: argparse.Namespace) -> int:
    """``taskflow requeue``: run dead letters again as new tasks (given ids, or ``--all``)."""
    if args.all == bool(args.task_ids):
        raise CliError(
            ExitCode.USAGE, "give the ids of dead letters to requeue, or --all (not both)"
        )
    if args.queue is not None and not args.all:
        raise CliError(ExitCode.USAGE, "--queue goes with --all (ids name their own queue)")
    app = shared_app(args.app, "requeue")
    return anyio.run(_requeue, app, args.task_ids, args.all, args.queue, args.json)


async def _requeue(
    app: QueueTasks, task_ids: list[str], every: bool, queue: str | None, as_json: bool
) -> int:
    async with app:
        if every:
            task_ids = await _all_dead(app, queue or app.config.default_queue)
        missing = 0
        for start in range(0, len(task_ids), _REQUEUE_PAGE):
            chunk = task_ids[start : start + _REQUEUE_PAGE]
            handles = await app.requeue(chunk)
            for task_id, handle in zip(chunk, handles, strict=True):
                new_id = None if handle is None else handle.task_id
                missing += new_id is None
                if as_json:
                    emit_json({"id": task_id, "new_id": new_id})
                elif new_id is None:
                    print(f"{task_id}: not a dead letter; skipped")
                else:
                    print(f"{task_id} -> {new_id}")
    if every and not as_json:
        print(f"requeued {len(task_ids) - missing} dead letter(s)")
    return ExitCode.NOT_FOUND if missing else ExitCode.OK


async def _all_dead(app: QueueTasks, queue: str) -> list[str]:
    """Every dead letter of `queue` now (read first, so that tasks that die again while they
    are requeued are not requeued twice)."""
    ids: list[str] = []
    while True:
        page = await app.broker.dead_letters(queue, limit=_REQUEUE_PAGE, offset=len(ids))
        ids += [record.id for record in page]
        if len(page) < _REQUEUE_PAGE:
            return ids


# -- db upgrade -------------------------------------------------------------------------------


def db_upgrade(args: argparse.Namespace) -> int:
    """``taskflow db upgrade``: create or migrate the PostgreSQL tables of one app."""
    return anyio.run(_db_upgrade, args.url, args.schema, args.app)


async def _db_upgrade(url: str, schema: str | None, app: str) -> int:
    from .. import postgres

    if schema is None:
        version = await postgres.upgrade(url, app=app)
    else:
        version = await postgres.upgrade(url, schema, app=app)
    print(f"app {app!r}: schema is at version {version}")
    return ExitCode.OK
