"""taskiq's `InMemoryBroker`: the one peer with an in-memory broker, in its own venv.

What it is: ``kiq()`` on an `InMemoryBroker` does not queue anything; it starts the task at once
as an asyncio task (``asyncio.create_task(receiver.callback(...))``) and the result lands in a
dict (``max_stored_results=-1`` so none is evicted before it is read). There is no worker, no
lease, no record of a queued task, and no push for results: `wait_result` polls, here with
``check_interval=0`` (a bare yield to the loop), the most favourable setting for taskiq.
Run it as ``benchmarks/.venvs/taskiq-memory/bin/python benchmarks/adapters/taskiq_memory.py
--workload E2E --n 10000``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import _harness
from _harness import Metrics, NotApplicable, Params
from taskiq import AsyncTaskiqTask, InMemoryBroker

RESULT_TIMEOUT_S = 120.0


def make_broker(concurrency: int) -> tuple[InMemoryBroker, Any, Any]:
    """A fresh broker (results never evicted) with the tasks ``noop`` and ``nap``."""
    broker = InMemoryBroker(max_stored_results=-1, max_async_tasks=concurrency)

    @broker.task
    async def noop() -> None:
        return None

    @broker.task
    async def nap(seconds: float) -> None:
        await asyncio.sleep(seconds)

    return broker, noop, nap


async def await_all(handles: list[AsyncTaskiqTask[Any]]) -> None:
    """Wait for every task's result, in order, polling with a bare yield between checks."""
    for handle in handles:
        result = await handle.wait_result(check_interval=0.0, timeout=RESULT_TIMEOUT_S)
        result.raise_for_error()


async def enqueue_one_by_one(params: Params) -> Metrics:
    """A1: ``await noop.kiq()`` n times (each one also schedules the task to run)."""
    broker, noop, _ = make_broker(params.concurrency)
    await broker.startup()
    start = time.perf_counter()
    for _ in range(params.n):
        await noop.kiq()
    elapsed = time.perf_counter() - start
    await broker.wait_all()
    await broker.shutdown()
    return {"tasks_per_s": _harness.per_second(params.n, elapsed)}


async def enqueue_batched(params: Params) -> Metrics:
    """A2: taskiq has no batch enqueue."""
    raise NotApplicable("taskiq has no batch enqueue API")


async def process_queued(params: Params) -> Metrics:
    """B: kick n tasks without letting them run (untimed), then time them to the last result.

    With no queue in `InMemoryBroker`, "queued" means n asyncio tasks created by ``kiq()`` that
    have not had a turn of the loop yet; ``ran_early`` counts any that finished during kicking.
    """
    broker, noop, _ = make_broker(params.concurrency)
    await broker.startup()
    handles = [await noop.kiq() for _ in range(params.n)]
    ran_early = len(broker.result_backend.results)
    start = time.perf_counter()
    await await_all(handles)
    elapsed = time.perf_counter() - start
    await broker.shutdown()
    return {"tasks_per_s": _harness.per_second(params.n, elapsed), "ran_early": ran_early}


async def end_to_end(params: Params) -> Metrics:
    """E2E: ``kiq()`` n times one by one, then await every result."""
    broker, noop, _ = make_broker(params.concurrency)
    await broker.startup()
    start = time.perf_counter()
    handles = [await noop.kiq() for _ in range(params.n)]
    await await_all(handles)
    elapsed = time.perf_counter() - start
    await broker.shutdown()
    return {"tasks_per_s": _harness.per_second(params.n, elapsed)}


async def latency(params: Params) -> Metrics:
    """C: one task every 1/rate s, each timed from ``kiq()`` to its result being seen."""
    broker, noop, _ = make_broker(params.concurrency)
    await broker.startup()

    async def send_and_wait() -> None:
        await await_all([await noop.kiq()])

    metrics = await _harness.steady_latencies(params, send_and_wait)
    await broker.shutdown()
    return metrics


async def sleepers(params: Params) -> Metrics:
    """D: n tasks of ``sleep(params.sleep_s)`` kicked one by one, then await every result."""
    broker, _, nap = make_broker(params.concurrency)
    await broker.startup()
    start = time.perf_counter()
    handles = [await nap.kiq(params.sleep_s) for _ in range(params.n)]
    await await_all(handles)
    elapsed = time.perf_counter() - start
    await broker.shutdown()
    return {"seconds": round(elapsed, 4)}


NOTES = {
    "A1": "taskiq A1: kiq() on InMemoryBroker also starts the task (no queue in between).",
    "B": (
        "taskiq B: no queue or worker exists; n tasks are kicked without yielding (pending "
        "asyncio tasks), then timed from the first yield to the last result seen."
    ),
    "E2E": (
        "taskiq B/E2E/C: results are polled (wait_result, check_interval=0: a bare yield); "
        "taskiq has no result push, and its default 0.2 s interval would dominate."
    ),
    "D": (
        "taskiq D: concurrency is not bounded: InMemoryBroker.kick starts every task at once, "
        "max_async_tasks only applies to a listening worker, so all n sleeps overlap."
    ),
}


if __name__ == "__main__":
    _harness.main(
        "taskiq-memory",
        {
            "A1": enqueue_one_by_one,
            "A2": enqueue_batched,
            "B": process_queued,
            "E2E": end_to_end,
            "C": latency,
            "D": sleepers,
        },
        distributions=("taskiq",),
        notes=NOTES,
    )
