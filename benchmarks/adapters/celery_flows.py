"""Celery's canvas on Redis: the flow benchmark's chain of fan-outs as a chain of chords.

Stage s is ``chord([shard.si(s, i) for i in range(width)], join.s(s))``; each join receives its
shards' results, as taskflow's do. Two variants (``--variant``):

- ``chain``: the whole canvas at once, ``chain(chord_0, chord_1, ...)``, applied with one
  ``apply_async``: a stage's shards start when the previous chord's body (its join) has ended.
  Celery carries the rest of the chain inside each chord's body, which travels in every shard
  message of the chord: a stage-0 shard message of 100 stages of 99 shards is about 3 MB, so
  the bytes sent grow with the square of the stages (see docs/benchmarks.md).
- ``stepwise``: what a Celery user does for a long pipeline: the producer applies the first
  chord, and each join applies the next stage's chord (its body with a task id known in
  advance, so the producer waits for the last join by id). Messages stay the size of one stage.

Redis is both the broker and the result backend (the backend Celery's chords count their parts
in). The worker is Celery's own CLI in a process of its own, ``celery -A celery_flows worker`` with
``--pool`` and ``--concurrency`` from the command line (gossip, mingle and heartbeats off: they
are cluster chatter). The producer applies the chain with one ``apply_async`` and waits for the
last join's result with ``AsyncResult.get``.

Runs in Celery's own venv (``benchmarks/.venvs/celery-redis``); uses database 15 of the Redis
server given, FLUSHed before the run. This module is also the worker's app module (its tasks
have explicit names, so the producer, which runs it as ``__main__``, sends the same ones).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import _flowbench
import _servers
from _flowbench import FlowParams, Metrics, Shape
from celery import Celery, chain, chord
from celery.result import AsyncResult

URL_ENV = "TASKFLOW_BENCH_CELERY_URL"

app = Celery("flows", broker=os.environ.get(URL_ENV), backend=os.environ.get(URL_ENV))
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="flows.shard")
def shard(stage: int, index: int) -> int:
    started = time.time()
    _flowbench.record("s", stage, index, started)
    return index


@app.task(name="flows.join")
def join(results: list[int], stage: int) -> int:
    started = time.time()
    _flowbench.record("j", stage, 0, started)
    return len(results)


@app.task(name="flows.join_then_next")
def join_then_next(results: list[int], stage: int, stages: int, width: int, run: str) -> int:
    """The stepwise variant's join: it logs its end, then applies the next stage's chord
    (sending it is what makes the children ready, so it falls in the figures' edges)."""
    started = time.time()
    _flowbench.record("j", stage, 0, started)
    if stage + 1 < stages:
        stage_chord(stage + 1, stages, width, run).apply_async()
    return len(results)


def canvas(shape: Shape) -> Any:
    """The chain of chords for `shape`."""
    return chain(
        *(
            chord([shard.si(stage, i) for i in range(shape.width)], join.s(stage))
            for stage in range(shape.stages)
        )
    )


def join_id(run: str, stage: int) -> str:
    """The task id of a stepwise join, known in advance."""
    return f"{run}-join-{stage}"


def stage_chord(stage: int, stages: int, width: int, run: str) -> Any:
    """One stage of the stepwise variant: its shards, then a join that applies the next."""
    body = join_then_next.s(stage, stages, width, run).set(task_id=join_id(run, stage))
    return chord([shard.si(stage, i) for i in range(width)], body)


def submit(shape: Shape, variant: str) -> Callable[[], Any]:
    """Apply the flow (built before the clock starts, as taskflow's graph is); the returned
    function waits for the last join's result."""
    if variant == "chain":
        flow = canvas(shape)
        return lambda: flow.apply_async()
    run = uuid.uuid4().hex
    first = stage_chord(0, shape.stages, shape.width, run)
    last = AsyncResult(join_id(run, shape.stages - 1), app=app)
    return lambda: (first.apply_async(), last)[1]


def worker_command(params: FlowParams) -> list[str]:
    """Celery's worker CLI for this module."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "celery_flows",
        "worker",
        "--pool",
        params.pool,
        "--concurrency",
        str(params.concurrency),
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def drain(params: FlowParams, worker: _servers.WorkerProcess) -> Metrics:
    """Warm the worker up with a small flow, then time the real one."""
    submit(Shape(2, 2), params.variant)().get(timeout=120)
    _flowbench.empty_log(params.log)
    apply = submit(params.shape, params.variant)
    submitted = time.time()
    result = apply()
    submit_s = time.time() - submitted
    result.get(timeout=params.timeout_s, interval=0.005)
    done = time.time()
    worker.check_alive()
    return _flowbench.figures(params.shape, params.log, (submitted, submit_s, done))


def run(params: FlowParams) -> Metrics:
    """Flush the database, start the worker, submit and drain the flow."""
    url = _servers.dedicated_redis_url(params.url)
    os.environ[URL_ENV] = url  # the worker process inherits it
    app.conf.broker_url = url
    app.conf.result_backend = url
    app.backend.client.flushdb()
    worker = _servers.WorkerProcess(worker_command(params))
    worker.start()
    try:
        return drain(params, worker)
    finally:
        worker.stop()
        worker.log.close()


if __name__ == "__main__":
    _flowbench.main(
        "celery-redis",
        run,
        variants=("stepwise", "chain"),
        distributions=("celery", "kombu", "redis"),
        notes=[
            "Celery: Redis broker and result backend, one worker process "
            "(its pool's children do the work)."
        ],
    )
