"""The `taskflow` command: its parser, and `main`, which runs one command and turns whatever
ended it into an exit status (`ExitCode`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeAlias

from .. import __version__
from .._backends import DEFAULT_APP
from . import (
    _artifacts,
    _flows,
    _locks,
    _monitor,
    _observe,
    _queues,
    _schedules,
    _tasks,
    _web,
    _workers,
)
from ._errors import ExitCode, classify, exit_codes_help, format_traceback
from ._monitor_data import DEFAULT_REFRESH_S

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]
Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_APP_HELP = (
    "the module-level QueueTasks to use, as MODULE:ATTRIBUTE (e.g. myproject.tasks:app); the "
    "current directory is importable"
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and exit status `ExitCode.USAGE`)."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _log_level(text: str) -> int:
    name = text.strip().upper()
    if name not in _LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a log level; use one of {', '.join(_LOG_LEVELS)}"
        )
    level: int = logging.getLevelName(name)
    return level


def _command(sub: Commands, name: str, run: Command, summary: str) -> _Parser:
    parser: _Parser = sub.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:] + "."
    )
    parser.set_defaults(run=run)
    return parser


def _with_app(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", metavar="MODULE:APP", help=_APP_HELP)


def _with_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (one document per line)")


def _parser() -> _Parser:
    parser = _Parser(
        prog="taskflow",
        description="taskflow: run workers, look at tasks and queues, send and manage tasks.",
        epilog=exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"taskflow {__version__}")
    parser.add_argument(
        "--log-level",
        type=_log_level,
        default=os.environ.get("TASKFLOW_LOG_LEVEL", "INFO"),
        metavar="LEVEL",
        help="DEBUG, INFO (default; or TASKFLOW_LOG_LEVEL), WARNING, ERROR or CRITICAL; DEBUG "
        "also logs every task's start and end and shows the traceback of an error",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_worker(sub)
    _add_task_commands(sub)
    _add_flow(sub)
    _add_queue_commands(sub)
    _add_locks(sub)
    _add_schedules(sub)
    _add_observe(sub)
    _add_artifacts(sub)
    _add_monitor(sub)
    _add_web(sub)
    _add_db(sub)
    return parser


def _add_artifacts(sub: Commands) -> None:
    artifacts = _command(
        sub, "artifacts", _artifacts.artifacts, "list a task's artifacts, or fetch one"
    )
    _with_app(artifacts)
    artifacts.add_argument("task_id", metavar="TASK_ID", help="the id add_task returned")
    artifacts.add_argument(
        "--fetch", metavar="NAME", default=None, help="fetch the artifact NAME (needs -o)"
    )
    artifacts.add_argument(
        "--output",
        "-o",
        metavar="PATH",
        default=None,
        help="with --fetch: the file to write (through a temporary name; - for stdout)",
    )
    _with_json(artifacts)


def _add_worker(sub: Commands) -> None:
    worker = _command(sub, "worker", _workers.worker, "run workers for an app until stopped")
    _with_app(worker)
    worker.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=None,
        help="tasks run at once per process (default GlobalConfig.concurrency)",
    )
    worker.add_argument(
        "--processes",
        "-p",
        type=int,
        default=1,
        help="worker processes (default 1; more need a Redis or PostgreSQL backend)",
    )
    worker.add_argument(
        "--queues",
        "-q",
        default=None,
        help="comma-separated queues to serve (default: the default queue)",
    )


def _add_flow(sub: Commands) -> None:
    flow = _command(sub, "flow", _flows.flow, "show a flow: its state, each task, and the roll-up")
    _with_app(flow)
    flow.add_argument("flow_id", metavar="FLOW_ID", help="the id of the flow's handle")
    flow.add_argument(
        "--watch",
        "-w",
        action="store_true",
        help="follow the flow live, a line per change, until it ends",
    )
    _with_json(flow)


def _add_task_commands(sub: Commands) -> None:
    status = _command(
        sub, "status", _tasks.status, "show a task: status, progress, result or error"
    )
    _with_app(status)
    status.add_argument("task_id", metavar="TASK_ID", help="the id add_task returned")
    status.add_argument(
        "--watch",
        "-w",
        action="store_true",
        help="follow the task live (a progress bar on a terminal) until it ends",
    )
    _with_json(status)

    send = _command(sub, "send", _tasks.send, "send a task by name and print its id")
    _with_app(send)
    send.add_argument("task", metavar="TASK", help="the registered name of the task")
    send.add_argument("--args", default="[]", help="positional arguments as a JSON array")
    send.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    send.add_argument("--queue", default=None, help="the queue (default: the task's)")
    send.add_argument(
        "--delay", type=float, default=None, help="run it no sooner than in S seconds"
    )
    send.add_argument("--priority", type=int, default=None, help="higher runs first")
    _with_json(send)

    cancel = _command(
        sub, "cancel", _tasks.cancel, "cancel tasks: at once if waiting, else by request"
    )
    _with_app(cancel)
    cancel.add_argument("task_ids", metavar="TASK_ID", nargs="+", help="ids of the tasks to cancel")
    _with_json(cancel)


def _add_queue_commands(sub: Commands) -> None:
    stats = _command(sub, "stats", _queues.stats, "count a queue's tasks by state")
    _with_app(stats)
    stats.add_argument(
        "--queues",
        "-q",
        default=None,
        help="comma-separated queues (default: the default queue and every task's queue)",
    )
    _with_json(stats)

    purge = _command(sub, "purge", _queues.purge, "drop every waiting task of a queue")
    _with_app(purge)
    purge.add_argument("queue", metavar="QUEUE", help="the queue to empty of waiting tasks")
    purge.add_argument(
        "--yes", "-y", action="store_true", help="do not ask (needed without a terminal)"
    )
    _with_json(purge)

    dead = _command(sub, "dead-letters", _queues.dead_letters, "list dead-lettered tasks")
    _with_app(dead)
    dead.add_argument("--queue", default=None, help="the queue (default: the default queue)")
    dead.add_argument("--limit", type=int, default=50, help="list at most N (default 50)")
    _with_json(dead)

    requeue = _command(sub, "requeue", _queues.requeue, "run dead letters again as new tasks")
    _with_app(requeue)
    requeue.add_argument(
        "task_ids", metavar="TASK_ID", nargs="*", help="ids of dead-lettered tasks"
    )
    requeue.add_argument(
        "--all", action="store_true", help="every dead letter of the queue instead of ids"
    )
    requeue.add_argument(
        "--queue", default=None, help="with --all: the queue (default: the default queue)"
    )
    _with_json(requeue)


def _add_locks(sub: Commands) -> None:
    locks = _command(sub, "locks", _locks.locks, "list locks, their holders and waiters")
    _with_app(locks)
    locks.add_argument(
        "names", metavar="NAME", nargs="*", help="only these locks (default: every lock in use)"
    )
    _with_json(locks)


def _add_schedules(sub: Commands) -> None:
    schedules = _command(
        sub, "schedules", _schedules.schedules, "list periodic schedules; pause or resume one"
    )
    _with_app(schedules)
    change = schedules.add_mutually_exclusive_group()
    change.add_argument(
        "--pause", metavar="NAME", default=None, help="pause schedule NAME on every worker"
    )
    change.add_argument(
        "--resume",
        metavar="NAME",
        default=None,
        help="resume schedule NAME from its next slot (slots missed while paused are skipped)",
    )
    _with_json(schedules)


def _add_observe(sub: Commands) -> None:
    workers = _command(
        sub, "workers", _observe.workers, "list the live workers, in every process and host"
    )
    _with_app(workers)
    _with_json(workers)
    errors = _command(
        sub, "errors", _observe.errors, "list failed attempts, newest first (retried ones too)"
    )
    _with_app(errors)
    errors.add_argument(
        "--since", default=None, help="only since then: 90s, 30m, 1h, 2d or an ISO 8601 time"
    )
    errors.add_argument("--task", default=None, metavar="NAME", help="only the task NAME")
    errors.add_argument(
        "--limit", type=int, default=100, help="at most this many (default 100, newest first)"
    )
    errors.add_argument(
        "--traceback", action="store_true", help="show each attempt's full traceback"
    )
    _with_json(errors)


def _add_monitor(sub: Commands) -> None:
    monitor = _command(
        sub, "monitor", _monitor.monitor, "a live view of workers, queues, leaders and errors"
    )
    _with_app(monitor)
    monitor.add_argument(
        "--spawn",
        type=int,
        default=0,
        metavar="N",
        help="start N worker processes of the app, show them, stop them on q (default 0)",
    )
    monitor.add_argument(
        "--role",
        default="generator",
        help="the role whose leader k kills, shown first (default generator)",
    )
    monitor.add_argument(
        "--roles",
        default=None,
        metavar="A,B",
        help="comma-separated roles whose leaders to show besides --role",
    )
    monitor.add_argument(
        "--queues",
        "-q",
        default=None,
        help="comma-separated queues (default: the default queue and every task's queue)",
    )
    monitor.add_argument(
        "--refresh",
        type=float,
        default=DEFAULT_REFRESH_S,
        metavar="S",
        help=f"seconds between reads of queues and leaders (default {DEFAULT_REFRESH_S}; the "
        "worker registry is read every heartbeat_s of the app)",
    )
    monitor.add_argument(
        "--log-dir",
        default=None,
        help="with --spawn: where each worker's output goes (default: a new temporary directory)",
    )


def _add_web(sub: Commands) -> None:
    web = _command(sub, "web", _web.web, "serve a live web view of an app's queues and tasks")
    _with_app(web)
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    web.add_argument("--port", type=int, default=8787, help="port to listen on (default 8787)")
    web.add_argument(
        "--token",
        default=None,
        help=f"sign-in token that allows changes (default: ${_web.TOKEN_ENV}; none: read-only)",
    )
    web.add_argument(
        "--with-worker",
        action="store_true",
        help="run a worker of the app inside the server (needed for the memory backend)",
    )
    web.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=None,
        help="with --with-worker: tasks run at once (default GlobalConfig.concurrency)",
    )


def _add_db(sub: Commands) -> None:
    db = sub.add_parser(
        "db", help="PostgreSQL schema management", description="PostgreSQL schema management."
    )
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = _command(
        db_sub, "upgrade", _queues.db_upgrade, "create or migrate the taskflow tables"
    )
    upgrade.add_argument(
        "url", metavar="POSTGRES_URL", help="postgresql://user:password@host:port/database"
    )
    upgrade.add_argument(
        "--app",
        default=DEFAULT_APP,
        help=f"the app's name, as in QueueTasks(name=...) (default {DEFAULT_APP}); its tables "
        "are in the schema <schema>_<app>",
    )
    upgrade.add_argument(
        "--schema",
        default=None,
        help="base of the schema name (default: the URL's ?schema=, or taskflow)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `taskflow` command; returns the exit status."""
    args = _parser().parse_args(argv)
    debug = args.log_level <= logging.DEBUG
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    try:
        code: int = args.run(args)
    except (Exception, KeyboardInterrupt) as exc:
        return _report(exc, debug)
    return code


def _report(exc: BaseException, debug: bool) -> int:
    code, message = classify(exc)
    if debug and code is not ExitCode.INTERRUPTED:
        sys.stderr.write(format_traceback(exc))
    print(f"taskflow: {message}", file=sys.stderr)
    return int(code)
