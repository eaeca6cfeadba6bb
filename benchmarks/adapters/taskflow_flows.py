"""taskflow's flows on memory, Redis or PostgreSQL: the flow benchmark's chain of fan-outs.

Two variants (``--variant``):

- ``graph``: the whole chain declared with ``app.flow`` and stored by one ``flow.submit()``:
  stage s is `Shape.width` ``shard(s, i)`` nodes after the previous stage's join, then
  ``join(s, results)`` after all of them with ``inputs={"results": shards}``. The backend makes a
  node claimable in the call that stores its last parent's end.
- ``fan-out``: a chain of ``stage(s, width)`` nodes, each splitting its work at run time with
  ``await ctx.fan_out(item_shard, [[s, 0], ...], join=item_join)``; a stage ends as its join
  ends, and the next stage starts then. Each stage adds a fanning node to the count.

The producer is this process: it builds the flow (untimed, as Celery's canvas is built before
its clock starts), times ``flow.submit()``, and waits for the last join's result by its task
id (``app.result(id).result()``), as Celery's producer waits for the last chord's. The worker
is taskflow's own CLI in a process of its own on Redis and PostgreSQL
(``python -m taskflow worker _taskflow_flow_app:app``), and ``app.running()`` in this process on
the memory backend. A small flow goes through first, untimed, so the worker is warm.

Redis: database 15 of the server given, FLUSHed first. PostgreSQL: schema
``taskflow_bench_flows`` (its tables in ``taskflow_bench_flows_bench``), dropped first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import _flowbench
import _servers
import taskflow_postgres
import taskflow_redis
from _flowbench import FlowParams, Metrics, Shape
from _taskflow_app import BROKER_ENV
from _taskflow_flow_app import make_app

from taskflow import QueueTasks

SCHEMA = _servers.bench_schema("taskflow_bench_flows")
VARIANTS = ("graph", "fan-out")


def build(app: QueueTasks, shape: Shape, variant: str) -> tuple[Any, str]:
    """The flow of `shape` and the node name of its last join (``graph``) or stage."""
    flow = app.flow("bench")
    if variant == "fan-out":
        previous: list[Any] = []
        for number in range(shape.stages):
            previous = [
                flow.add("flows.stage", number, shape.width, after=previous, name=f"f{number}")
            ]
        return flow, f"f{shape.stages - 1}"
    parents: list[Any] = []
    for number in range(shape.stages):
        shards = [
            flow.add("flows.shard", number, i, after=parents, name=f"s{number}.{i}")
            for i in range(shape.width)
        ]
        join = flow.add(
            "flows.join", number, after=shards, inputs={"results": shards}, name=f"j{number}"
        )
        parents = [join]
    return flow, f"j{shape.stages - 1}"


async def submit_and_drain(
    app: QueueTasks, shape: Shape, variant: str, timeout_s: float
) -> tuple[float, float, float]:
    """Submit one flow and wait for its last node: (submitted, submit_s, done)."""
    flow, last = build(app, shape, variant)
    submitted = time.time()
    handle = await flow.submit()
    submit_s = time.time() - submitted
    await app.result(handle.tasks[last]).result(timeout=timeout_s)
    return submitted, submit_s, time.time()


def worker_command(concurrency: int) -> list[str]:
    """taskflow's own worker CLI for `_taskflow_flow_app`."""
    return [
        sys.executable,
        "-m",
        "taskflow",
        "--log-level",
        "WARNING",
        "worker",
        "_taskflow_flow_app:app",
        "--concurrency",
        str(concurrency),
    ]


async def fresh_url(url: str | None) -> str | None:
    """The URL to run on, its benchmark state emptied (None: the memory backend)."""
    if url is None:
        return None
    if url.startswith("redis"):
        redis_url = _servers.dedicated_redis_url(url)
        await taskflow_redis.flush(redis_url)
        return redis_url
    pg_url = taskflow_postgres.resolve(url, SCHEMA)
    await taskflow_postgres.drop_schema(pg_url)
    return pg_url


@contextlib.asynccontextmanager
async def worker(app: QueueTasks, url: str | None, concurrency: int) -> AsyncIterator[Any]:
    """The worker for the run: in this process on memory, else a process of its own."""
    if url is None:
        async with app.running(concurrency=concurrency):
            yield None
        return
    os.environ[BROKER_ENV] = url  # the worker process inherits it
    async with _servers.worker_process(worker_command(concurrency)) as process:
        yield process


async def measure(params: FlowParams) -> Metrics:
    """Warm up with a small flow, then submit and drain the real one."""
    url = await fresh_url(params.url)
    app = make_app(url)
    async with app, worker(app, url, params.concurrency) as process:
        warm = submit_and_drain(app, Shape(2, 2), params.variant, 120)
        await (warm if process is None else _servers.watched(process, warm, 120))
        _flowbench.empty_log(params.log)
        run = submit_and_drain(app, params.shape, params.variant, params.timeout_s)
        clock = await (run if process is None else _servers.watched(process, run, 1e9))
    return _flowbench.figures(params.shape, params.log, clock, fanned=params.variant == "fan-out")


def run(params: FlowParams) -> Metrics:
    """`measure` on uvloop (as every adapter runs)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(measure(params))
    return uvloop.run(measure(params))


if __name__ == "__main__":
    _flowbench.main(
        "taskflow",
        run,
        variants=VARIANTS,
        distributions=("taskflow", "redis", "asyncpg", "msgspec"),
    )
