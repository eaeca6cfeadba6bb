"""The app of taskflow's flow benchmark: its tasks, and the app its worker processes run.

The worker is ``python -m taskflow worker _taskflow_flow_app:app --concurrency C`` in this
directory, with ``TASKFLOW_BENCH_BROKER`` naming the Redis URL or PostgreSQL DSN (the memory
backend runs its worker in the producer's process). Every body logs itself with
`_flowbench.record` first, so the figures see when each node's work began and ended.

- ``flows.shard(stage, index)`` and ``flows.join(stage, results)``: the declared graph's nodes
  (``--variant graph``); the join gets its shards' results through ``inputs``.
- ``flows.stage(stage, width)`` fans out with ``ctx.fan_out`` into ``flows.item_shard([stage,
  index])`` shards joined by ``flows.item_join(results)`` (``--variant fan-out``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import _flowbench
from _taskflow_app import APP_NAME, BROKER_ENV

from taskflow import QueueTasks, TaskContext


async def shard(stage: int, index: int) -> int:
    _flowbench.record("s", stage, index, time.time())
    return index


async def join(stage: int, results: list[int]) -> int:
    _flowbench.record("j", stage, 0, time.time())
    return len(results)


async def item_shard(item: list[int]) -> list[int]:
    _flowbench.record("s", item[0], item[1], time.time())
    return item


async def item_join(results: list[list[int]]) -> int:
    _flowbench.record("j", results[0][0], 0, time.time())
    return len(results)


async def stage(ctx: TaskContext, number: int, width: int) -> Any:
    # Logged before the fan-out: storing the shards and making them claimable is the system's
    # part, which the figures measure (as they do the storing of any node's outcome).
    _flowbench.record("f", number, 0, time.time())
    return await ctx.fan_out(
        "flows.item_shard", [[number, i] for i in range(width)], join="flows.item_join"
    )


def make_app(url: str | None) -> QueueTasks:
    """An app on `url` (None: the memory backend) with the benchmark's five tasks."""
    made = QueueTasks(name=APP_NAME) if url is None else QueueTasks(name=APP_NAME, broker=url)
    made.task(name="flows.shard")(shard)
    made.task(name="flows.join")(join)
    made.task(name="flows.item_shard")(item_shard)
    made.task(name="flows.item_join")(item_join)
    made.task(name="flows.stage")(stage)
    return made


def __getattr__(name: str) -> Any:
    # ``app`` is built on first access only (the producer imports `make_app` without the URL).
    if name == "app":
        return make_app(os.environ[BROKER_ENV])
    raise AttributeError(name)
