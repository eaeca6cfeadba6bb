"""taskflow on a server backend (Redis or PostgreSQL): the six workloads, worker in its own process.

Shared by ``taskflow_redis.py``, ``taskflow_postgres.py`` and ``taskflow_postgres_1m.py``, which
only say how to reset the server before a run. The producer is this process; the worker is
``python -m taskflow worker _taskflow_app:app --concurrency C`` (taskflow's own CLI), a separate
OS process, as for every peer. Every task goes the whole way: a queued record, a claim with a
lease and a fencing token, the outcome stored and acked in one call, the producer woken by push.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _harness
import _servers
from _harness import Metrics, Params
from _taskflow_app import BROKER_ENV, make_app

RESULT_TIMEOUT_S = 120.0
Reset = Callable[[str], Awaitable[None]]
"""Empties the server's benchmark state (FLUSHDB, or a fresh schema) for one URL."""
ResolveUrl = Callable[[str | None], str]
"""The URL to use from the ``--url`` given (raises `_harness.NotApplicable` without one)."""


class Producer:
    """The producer's app for one run and its two task handles."""

    def __init__(self, url: str) -> None:
        os.environ[BROKER_ENV] = url  # the worker process inherits it
        self.app, self.noop, self.nap = make_app(url)


def worker_command(concurrency: int) -> list[str]:
    """taskflow's own worker CLI, run for the `_taskflow_app` module."""
    return [
        sys.executable,
        "-m",
        "taskflow",
        "--log-level",
        "WARNING",
        "worker",
        "_taskflow_app:app",
        "--concurrency",
        str(concurrency),
    ]


def waiter(handle: Any) -> Callable[[], Awaitable[Any]]:
    """A zero-argument coroutine function that awaits `handle`'s result."""
    return lambda: handle.result(timeout=RESULT_TIMEOUT_S)


class TaskflowServer:
    """The six workloads against the server of ``--url``, with `reset` run before each."""

    def __init__(self, resolve_url: ResolveUrl, reset: Reset) -> None:
        self.resolve_url = resolve_url
        self.reset = reset
        self.url = ""

    async def _fresh_app(self, params: Params) -> Producer:
        self.url = self.resolve_url(params.url)
        await self.reset(self.url)
        producer = Producer(self.url)
        await producer.app.open()
        return producer

    async def enqueue_one_by_one(self, params: Params) -> Metrics:
        """A1: ``await noop.add_task()`` n times, no worker running."""
        producer = await self._fresh_app(params)
        try:
            start = time.perf_counter()
            for _ in range(params.n):
                await producer.noop.add_task()
            elapsed = time.perf_counter() - start
        finally:
            await producer.app.close()
        return {"tasks_per_s": _harness.per_second(params.n, elapsed)}

    async def enqueue_batched(self, params: Params) -> Metrics:
        """A2: ``await app.add_tasks([...])`` in batches of ``params.batch``, no worker running."""
        producer = await self._fresh_app(params)
        try:
            start = time.perf_counter()
            for size in _harness.chunks(params.n, params.batch):
                await producer.app.add_tasks([producer.noop.prepare() for _ in range(size)])
            elapsed = time.perf_counter() - start
        finally:
            await producer.app.close()
        return {"tasks_per_s": _harness.per_second(params.n, elapsed)}

    async def process_queued(self, params: Params) -> Metrics:
        """B: n tasks queued in batches (untimed); the worker process started; timed from the
        first result seen to the last."""
        producer = await self._fresh_app(params)
        try:
            await self.prepare_big(params)
            handles: list[Any] = []
            for size in _harness.chunks(params.n, params.batch):
                handles += await producer.app.add_tasks(
                    [producer.noop.prepare() for _ in range(size)]
                )
            command = worker_command(params.concurrency)
            async with _servers.worker_process(command) as worker:
                return await _servers.drain_rate(
                    worker, waiter(handles[0]), [waiter(h) for h in handles[1:]]
                )
        finally:
            await producer.app.close()

    async def prepare_big(self, params: Params) -> None:
        """Hook for the 1,000,000-finished-rows variant (nothing by default)."""

    async def _with_worker(
        self, params: Params, body: Callable[[Producer, _servers.WorkerProcess], Awaitable[Metrics]]
    ) -> Metrics:
        producer = await self._fresh_app(params)
        try:
            async with _servers.worker_process(worker_command(params.concurrency)) as worker:
                # Warm-up: the worker is up and has claimed once before anything is timed.
                await _servers.watched(worker, (await producer.noop.add_task()).result(60), 60)
                return await body(producer, worker)
        finally:
            await producer.app.close()

    async def end_to_end(self, params: Params) -> Metrics:
        """E2E: worker running; ``add_task`` n times one by one, then await every result."""

        async def body(producer: Producer, worker: _servers.WorkerProcess) -> Metrics:
            start = time.perf_counter()
            handles = [await producer.noop.add_task() for _ in range(params.n)]
            await _servers.watched(
                worker, _servers.gather_bounded([waiter(h) for h in handles]), RESULT_TIMEOUT_S
            )
            elapsed = time.perf_counter() - start
            return {"tasks_per_s": _harness.per_second(params.n, elapsed)}

        return await self._with_worker(params, body)

    async def latency(self, params: Params) -> Metrics:
        """C: one task every 1/rate s, each timed from ``add_task`` to its ``result()``."""

        async def body(producer: Producer, worker: _servers.WorkerProcess) -> Metrics:
            async def send_and_wait() -> None:
                await (await producer.noop.add_task()).result(timeout=30)

            return await _harness.steady_latencies(params, send_and_wait)  # type: ignore[no-any-return]

        return await self._with_worker(params, body)

    async def sleepers(self, params: Params) -> Metrics:
        """D: n tasks of ``sleep(params.sleep_s)`` sent one by one, then await every result."""

        async def body(producer: Producer, worker: _servers.WorkerProcess) -> Metrics:
            start = time.perf_counter()
            handles = [await producer.nap.add_task(params.sleep_s) for _ in range(params.n)]
            await _servers.watched(
                worker, _servers.gather_bounded([waiter(h) for h in handles]), RESULT_TIMEOUT_S
            )
            return {"seconds": round(time.perf_counter() - start, 4)}

        return await self._with_worker(params, body)

    def workloads(self) -> dict[str, _harness.Workload]:
        """Workload name -> bound coroutine function, for `_harness.main`."""
        return {
            "A1": self.enqueue_one_by_one,
            "A2": self.enqueue_batched,
            "B": self.process_queued,
            "E2E": self.end_to_end,
            "C": self.latency,
            "D": self.sleepers,
        }
