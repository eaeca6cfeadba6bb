"""The `taskflow` command line: run workers and look at tasks.

```
taskflow worker module:app [--concurrency M] [--processes N] [--queues a,b]
taskflow status module:app TASK_ID
taskflow dead-letters module:app [--queue q] [--limit n]
taskflow requeue module:app TASK_ID [TASK_ID ...]
taskflow db upgrade POSTGRES_URL [--schema NAME]
```

The CLI is an application, so unlike the library it configures logging and installs signal
handlers. With ``--processes N`` the parent starts N worker processes (each one a
``taskflow worker ... --processes 1``), forwards SIGINT/SIGTERM to them and restarts one that dies
unexpectedly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio

from ._app import QueueTasks
from ._exceptions import BackendUnavailable, TaskflowError

__all__ = ["load_app", "main"]

logger = logging.getLogger("taskflow.cli")


def load_app(target: str) -> QueueTasks:
    """Import ``module:attribute`` and return the `QueueTasks` it names.

    Raises:
        SystemExit: with a message saying what was wrong.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise SystemExit(f"expected MODULE:APP (for example `myproject.tasks:app`), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"cannot import module {module_name!r}: {exc}") from None
    app = getattr(module, attribute, None)
    if not isinstance(app, QueueTasks):
        raise SystemExit(f"{target!r} is {app!r}, not a QueueTasks app")
    return app


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskflow", description="taskflow task queue")
    parser.add_argument("--log-level", default=os.environ.get("TASKFLOW_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run worker(s) for an app")
    worker.add_argument("app", help="MODULE:APP, e.g. myproject.tasks:app")
    worker.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=None,
        help="sub-worker slots per process (default GlobalConfig.concurrency)",
    )
    worker.add_argument(
        "--processes",
        "-p",
        type=int,
        default=1,
        help="worker processes (needs a backend shared across processes)",
    )
    worker.add_argument("--queues", "-q", default=None, help="comma-separated queues to serve")

    status = sub.add_parser("status", help="show one task's record")
    status.add_argument("app")
    status.add_argument("task_id")

    dead = sub.add_parser("dead-letters", help="list dead-lettered tasks")
    dead.add_argument("app")
    dead.add_argument("--queue", default=None)
    dead.add_argument("--limit", type=int, default=50)

    requeue = sub.add_parser("requeue", help="requeue dead letters as new tasks")
    requeue.add_argument("app")
    requeue.add_argument("task_ids", nargs="+")

    db = sub.add_parser("db", help="PostgreSQL schema management")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="create or migrate the taskflow tables")
    upgrade.add_argument("url", help="postgresql://user:password@host:port/database")
    upgrade.add_argument(
        "--schema", default=None, help="schema name (default: the URL's, or taskflow)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `taskflow` command; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    try:
        if args.command == "worker":
            return _worker(args)
        if args.command == "db":
            return anyio.run(_db_upgrade, args.url, args.schema)
        app = load_app(args.app)
        if args.command == "status":
            return anyio.run(_status, app, args.task_id)
        if args.command == "dead-letters":
            return anyio.run(_dead_letters, app, args.queue, args.limit)
        return anyio.run(_requeue, app, args.task_ids)
    except TaskflowError as exc:
        print(f"taskflow: {exc}", file=sys.stderr)
        return 2


def _queues(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    queues = [q.strip() for q in raw.split(",") if q.strip()]
    if not queues:
        raise SystemExit("--queues needs at least one queue name")
    return queues


def _worker(args: argparse.Namespace) -> int:
    if args.processes < 1:
        raise SystemExit("--processes must be >= 1")
    if args.concurrency is not None and args.concurrency < 1:
        raise SystemExit("--concurrency must be >= 1")
    app = load_app(args.app)
    queues = _queues(args.queues)
    if args.processes > 1:
        if not app.storage.shared_across_processes:
            raise BackendUnavailable(
                f"--processes {args.processes} needs a backend that processes can share; "
                f"{type(app.broker).__name__} lives inside one process. Use a Redis or "
                "PostgreSQL URL (QueueTasks(broker='redis://...')), or run one process with "
                "more --concurrency"
            )
        return _supervise_processes(args)
    app.run_forever(args.concurrency, queues=queues)
    return 0


def _child_command(args: argparse.Namespace) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "taskflow",
        "--log-level",
        args.log_level,
        "worker",
        args.app,
        "--processes",
        "1",
    ]
    if args.concurrency is not None:
        command += ["--concurrency", str(args.concurrency)]
    if args.queues is not None:
        command += ["--queues", args.queues]
    return command


def _supervise_processes(args: argparse.Namespace) -> int:
    """Run N worker processes; forward stop signals; restart a child that dies unexpectedly."""
    command = _child_command(args)
    children: list[subprocess.Popen[bytes]] = [
        subprocess.Popen(command) for _ in range(args.processes)
    ]
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    logger.info(
        "started %d worker processes: %s", len(children), ", ".join(str(c.pid) for c in children)
    )
    while True:
        alive = 0
        for index, child in enumerate(children):
            code = child.poll()
            if code is None:
                alive += 1
            elif not stopping:
                logger.warning("worker process %d exited with %s; restarting it", child.pid, code)
                time.sleep(0.5)
                children[index] = subprocess.Popen(command)
                alive += 1
        if stopping and alive == 0:
            return 0
        time.sleep(0.2)


async def _db_upgrade(url: str, schema: str | None) -> int:
    from . import postgres

    version = await postgres.upgrade(url) if schema is None else await postgres.upgrade(url, schema)
    print(f"schema is at version {version}")
    return 0


async def _status(app: QueueTasks, task_id: str) -> int:
    async with app:
        record = await app.get(task_id)
    if record is None:
        print(f"no task {task_id!r}", file=sys.stderr)
        return 1
    print(
        f"{record.id}  {record.name}  queue={record.queue}  status={record.status.value}  "
        f"attempts={record.attempts}"
    )
    if record.progress is not None:
        print(f"progress: {record.progress.done}/{record.progress.total}")
    if record.error is not None:
        print(f"error: {record.error.type}: {record.error.message}")
    return 0


async def _dead_letters(app: QueueTasks, queue: str | None, limit: int) -> int:
    async with app:
        records = await app.dead_letters(queue, limit=limit)
    for record in records:
        error = f"{record.error.type}: {record.error.message}" if record.error else "-"
        print(f"{record.id}  {record.name}  attempts={record.attempts}  {error}")
    print(f"{len(records)} dead-lettered task(s)")
    return 0


async def _requeue(app: QueueTasks, task_ids: list[str]) -> int:
    async with app:
        handles = await app.requeue(task_ids)
    missing = 0
    for task_id, handle in zip(task_ids, handles, strict=True):
        if handle is None:
            missing += 1
            print(f"{task_id}: not dead-lettered, skipped")
        else:
            print(f"{task_id} -> {handle.task_id}")
    return 1 if missing else 0
