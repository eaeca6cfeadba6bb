"""The app the taskflow server adapters enqueue to and their worker processes run.

The worker is started as ``python -m taskflow worker _taskflow_app:app --concurrency 100`` in
this directory, with ``TASKFLOW_BENCH_BROKER`` naming the Redis URL or PostgreSQL DSN; the
producer builds its own app with `make_app` (a fresh one per run: a closed app cannot be
reopened), with the same task names ``noop`` and ``nap``. Defaults of `GlobalConfig` apply
(``claim_batch`` 100): taskflow's recommended settings.

The declared-lock benchmark (``taskflow_locks.py``) adds three tasks, registered on every app
so its worker processes know them: ``shared_noop`` (a no-op declaring ``Shared(LOCK)``),
``hold`` (sleeps under ``Shared(LOCK)``, returns when its body ended) and ``swap`` (declares
``Exclusive(LOCK)``, returns when its body started); `lock_tasks` gives their handles.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from taskflow import QueueTasks

BROKER_ENV = "TASKFLOW_BENCH_BROKER"
APP_NAME = "bench"
"""The app's name: on PostgreSQL its tables are in the schema ``<schema>_bench``."""
LOCK = "bench.table"
"""The lock the declared-lock tasks take."""


async def shared_noop() -> None:
    return None


async def hold(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return time.time()


async def swap() -> float:
    return time.time()


def lock_tasks(app: QueueTasks) -> tuple[Any, Any, Any]:
    """The declared-lock tasks on `app`: ``(shared_noop, hold, swap)`` (registered once per
    app; registering the same function again returns its handle).

    Imported here, not at the top: `benchmarks.before_after` runs these adapters on a baseline
    checkout too, which may predate declared locks."""
    from taskflow import Exclusive, Shared

    return (
        app.task(name="shared_noop", locks=[Shared(LOCK)])(shared_noop),
        app.task(name="hold", locks=[Shared(LOCK)])(hold),
        app.task(name="swap", locks=[Exclusive(LOCK)])(swap),
    )


def make_app(url: str) -> tuple[QueueTasks, Any, Any]:
    """An app on `url` with the tasks ``noop`` and ``nap``: ``(app, noop, nap)``."""
    made = QueueTasks(name=APP_NAME, broker=url)

    @made.task
    async def noop() -> None:
        return None

    @made.task
    async def nap(seconds: float) -> None:
        await asyncio.sleep(seconds)

    with contextlib.suppress(ImportError):  # a baseline from before declared locks
        lock_tasks(made)
    return made, noop, nap


def __getattr__(name: str) -> Any:
    # ``app`` is built on first access only, so the producer can import `make_app` without
    # ``TASKFLOW_BENCH_BROKER`` set.
    if name == "app":
        return make_app(os.environ[BROKER_ENV])[0]
    raise AttributeError(name)
