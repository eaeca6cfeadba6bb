"""What the adapters of server backends share: worker processes, server URLs, B's clock.

The worker of every system on Redis or PostgreSQL (taskflow's included) runs as a separate OS
process started by the library's own CLI; `worker_process` starts it in this directory (so
``module:app`` targets import from here), watches it, and stops it by its own pid. Redis
adapters use database `BENCH_REDIS_DB` (15), never the tests' 0, and FLUSH it before each run.
`drain_rate` is workload B's clock for all of them.

Standard library only (plus `_harness`): it runs in every peer's own venv.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from _harness import Metrics, NotApplicable, per_second

BENCH_REDIS_DB = int(os.environ.get("TASKFLOW_BENCH_REDIS_DB", "15"))
"""The Redis database every Redis adapter uses, and FLUSHes before each run: never the tests' 0
(``TASKFLOW_BENCH_REDIS_DB`` picks another, so a test can run beside a benchmark)."""

ADAPTERS_DIR = os.path.dirname(os.path.abspath(__file__))
"""This directory: worker processes run here, so ``module:app`` targets import from it."""


def bench_schema(name: str) -> str:
    """A PostgreSQL adapter's schema `name`, plus ``TASKFLOW_BENCH_SCHEMA_SUFFIX`` if set (the
    tests set one, so they never drop the schemas of a benchmark running beside them)."""
    return name + os.environ.get("TASKFLOW_BENCH_SCHEMA_SUFFIX", "")


def dedicated_redis_url(url: str | None) -> str:
    """`url` with its database number replaced by `BENCH_REDIS_DB`, which each run flushes.

    Raises:
        NotApplicable: no URL was given (run the runner with ``--redis-url`` or after
            ``export $(scripts/services)``).
    """
    if not url:
        raise NotApplicable("no Redis URL: pass --redis-url or export $(scripts/services)")
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{BENCH_REDIS_DB}"))


def postgres_url(url: str | None) -> str:
    """`url`, checked to be given.

    Raises:
        NotApplicable: no URL was given (run the runner with ``--postgres-url`` or after
            ``export $(scripts/services)``).
    """
    if not url:
        raise NotApplicable("no PostgreSQL URL: pass --postgres-url or export $(scripts/services)")
    return url


class WorkerProcess:
    """A peer's (or taskflow's) worker, started as its own OS process by its own CLI or API.

    Its output goes to a temporary file, shown in the error when it dies early. Stopped by its
    own pid: SIGTERM (graceful shutdown), then SIGKILL after `stop_timeout_s`.
    """

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.command = list(command)
        # ADAPTERS_DIR first, then any PYTHONPATH given to the producer (e.g. a checkout's
        # src), so the worker runs the same library code as the producer.
        path = os.pathsep.join(p for p in (ADAPTERS_DIR, os.environ.get("PYTHONPATH")) if p)
        self.env = {**os.environ, "PYTHONPATH": path, **(env or {})}
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by worker_process
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process in `ADAPTERS_DIR`."""
        self.process = subprocess.Popen(
            self.command, cwd=ADAPTERS_DIR, env=self.env, stdout=self.log, stderr=self.log
        )

    def output_tail(self, lines: int = 8) -> str:
        """The last lines the process printed."""
        self.log.seek(0)
        text = self.log.read().decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def check_alive(self) -> None:
        """Raise `RuntimeError` (with its output) if the worker has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"worker {' '.join(self.command)} exited with {self.process.returncode}: "
                f"{self.output_tail()}"
            )

    def stop(self, stop_timeout_s: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL if it still runs."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.asynccontextmanager
async def worker_process(
    command: Sequence[str], env: dict[str, str] | None = None
) -> AsyncIterator[WorkerProcess]:
    """Run `command` as the worker for the duration of the block, then stop it by its pid."""
    worker = WorkerProcess(command, env)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        worker.log.close()


async def watched(worker: WorkerProcess, awaitable: Awaitable[Any], timeout_s: float) -> Any:
    """Await `awaitable`, failing fast if `worker` dies meanwhile or `timeout_s` passes."""
    task = asyncio.ensure_future(awaitable)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.2)
            if done:
                return task.result()
            worker.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no result within {timeout_s:g} s: {worker.output_tail()}")
    finally:
        task.cancel()


async def gather_bounded(waits: Sequence[Callable[[], Awaitable[Any]]], limit: int = 50) -> None:
    """Run the result waits, at most `limit` at once (the producer sees every result).

    Bounded because a client's connection pool is (redis-py 8 raises ``MaxConnectionsError``
    past its 100 connections rather than queueing). `limit` runners take the next wait as
    each finishes: a semaphore with thousands of queued waiters would cost the harness itself
    O(waiters) per release on Python 3.11, capping every library's measured rate.
    """
    pending = iter(waits)

    async def runner() -> None:
        for wait in pending:
            await wait()

    await asyncio.gather(*(runner() for _ in range(min(limit, len(waits)))))


async def drain_rate(
    worker: WorkerProcess,
    first: Callable[[], Awaitable[Any]],
    rest: Sequence[Callable[[], Awaitable[Any]]],
    *,
    wait_limit: int = 50,
    timeout_s: float = 300.0,
) -> Metrics:
    """Workload B's clock: from the first task's result seen to the last one's.

    Timing from the worker's start would count its interpreter's start-up and imports (which
    differ widely between libraries); timing from the first result counts only draining.

    Args:
        worker: The worker process (watched: its death fails the run at once).
        first: Waits for the first task queued.
        rest: One wait per other task, run `wait_limit` at a time.
        wait_limit: See `gather_bounded`.
        timeout_s: Limit for each of the two phases.

    Returns:
        ``tasks_per_s`` (the tasks after the first over that span) and ``first_result_s`` (from
        this call to the first result: start-up plus the first claim).
    """
    began = time.perf_counter()
    await watched(worker, first(), timeout_s)
    start = time.perf_counter()
    await watched(worker, gather_bounded(rest, wait_limit), timeout_s)
    elapsed = time.perf_counter() - start
    return {
        "tasks_per_s": per_second(len(rest), elapsed),
        "first_result_s": round(start - began, 3),
    }


def with_search_path(dsn: str, schema: str) -> str:
    """`dsn` with libpq ``options`` setting ``search_path`` to `schema` (for libraries whose
    tables live in whatever schema the connection's search path names)."""
    parts = urlsplit(dsn)
    query = "&".join(q for q in (parts.query, f"options=-csearch_path%3D{schema}") if q)
    return urlunsplit(parts._replace(query=query))
