"""taskflow on its in-memory backend: the six workloads with the full semantics.

Every task goes the whole way a production task does: a `TaskMessage` with a backend-chosen id,
a queued record in storage, a claim with a lease and a fencing token, the outcome stored and
acked in one call, events, and the producer woken by push. Defaults of `GlobalConfig` apply
(``claim_batch`` 100); the worker runs in-process via ``app.running(concurrency=...)``. Run it as
``python benchmarks/adapters/taskflow_memory.py --workload E2E --n 10000``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import _harness
from _harness import Metrics, Params

from taskflow import AsyncResult, QueueTasks


def make_app() -> tuple[QueueTasks, Any, Any]:
    """A fresh app on the memory backend with the two benchmark tasks: ``noop`` and ``nap``."""
    app = QueueTasks(name="bench")

    @app.task
    async def noop() -> None:
        return None

    @app.task
    async def nap(seconds: float) -> None:
        await asyncio.sleep(seconds)

    return app, noop, nap


async def await_all(handles: list[AsyncResult[Any]]) -> None:
    """Wait for every handle's result, in order (the producer sees each one)."""
    for handle in handles:
        await handle.result(timeout=120)


async def enqueue_one_by_one(params: Params) -> Metrics:
    """A1: ``await noop.add_task()`` n times, no worker running."""
    app, noop, _ = make_app()
    async with app:
        start = time.perf_counter()
        for _ in range(params.n):
            await noop.add_task()
        elapsed = time.perf_counter() - start
    return {"tasks_per_s": _harness.per_second(params.n, elapsed)}


async def enqueue_batched(params: Params) -> Metrics:
    """A2: ``await app.add_tasks([...])`` in batches of ``params.batch``, no worker running."""
    app, noop, _ = make_app()
    async with app:
        start = time.perf_counter()
        for size in _harness.chunks(params.n, params.batch):
            await app.add_tasks([noop.prepare() for _ in range(size)])
        elapsed = time.perf_counter() - start
    return {"tasks_per_s": _harness.per_second(params.n, elapsed)}


async def process_queued(params: Params) -> Metrics:
    """B: n tasks queued (batched, untimed); timed from worker start to the last result."""
    app, noop, _ = make_app()
    async with app:
        handles: list[AsyncResult[Any]] = []
        for size in _harness.chunks(params.n, params.batch):
            handles += await app.add_tasks([noop.prepare() for _ in range(size)])
        start = time.perf_counter()
        async with app.running(concurrency=params.concurrency):
            await await_all(handles)
            elapsed = time.perf_counter() - start
    return {"tasks_per_s": _harness.per_second(params.n, elapsed)}


async def end_to_end(params: Params) -> Metrics:
    """E2E: worker running; ``add_task`` n times one by one, then await every result."""
    app, noop, _ = make_app()
    async with app.running(concurrency=params.concurrency):
        start = time.perf_counter()
        handles = [await noop.add_task() for _ in range(params.n)]
        await await_all(handles)
        elapsed = time.perf_counter() - start
    return {"tasks_per_s": _harness.per_second(params.n, elapsed)}


async def latency(params: Params) -> Metrics:
    """C: one task every 1/rate s, each timed from ``add_task`` to its ``result()``."""
    app, noop, _ = make_app()

    async def send_and_wait() -> None:
        await (await noop.add_task()).result(timeout=30)

    async with app.running(concurrency=params.concurrency):
        return await _harness.steady_latencies(params, send_and_wait)


async def sleepers(params: Params) -> Metrics:
    """D: n tasks of ``sleep(params.sleep_s)`` sent one by one, then await every result."""
    app, _, nap = make_app()
    async with app.running(concurrency=params.concurrency):
        start = time.perf_counter()
        handles = [await nap.add_task(params.sleep_s) for _ in range(params.n)]
        await await_all(handles)
        elapsed = time.perf_counter() - start
    return {"seconds": round(elapsed, 4)}


if __name__ == "__main__":
    _harness.main(
        "taskflow-memory",
        {
            "A1": enqueue_one_by_one,
            "A2": enqueue_batched,
            "B": process_queued,
            "E2E": end_to_end,
            "C": latency,
            "D": sleepers,
        },
        distributions=("taskflow", "anyio", "msgspec"),
    )
