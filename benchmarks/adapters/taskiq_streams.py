"""taskiq with taskiq-redis's stream broker (`RedisStreamBroker`), in its own venv.

Worker: taskiq's CLI, ``taskiq worker taskiq_streams:broker --workers 1 --max-async-tasks 100``.
Results: `RedisAsyncResultBackend`; taskiq has no result push, ``wait_result`` polls, here every
10 ms (its default 0.2 s), one waiter at a time in enqueue order (favourable to taskiq). taskiq has
no batch enqueue (A2 n/a; B kicks one by one, untimed). Everything else is taskiq-redis's
defaults (``xread_count`` 100, consumer group created at startup, before anything is sent).
Database `_servers.BENCH_REDIS_DB` (15), FLUSHed before each run. (Named ``taskiq_streams`` so
it does not shadow the ``taskiq_redis`` package.)
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import _harness
import _peers
import _servers
import redis.asyncio as aioredis
from _harness import NotApplicable, Params
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

URL_ENV = "BENCH_REDIS_URL"
RESULT_POLL_S = 0.01


def make_broker(url: str) -> RedisStreamBroker:
    """The broker with its result backend and the two tasks registered."""
    made = RedisStreamBroker(url).with_result_backend(RedisAsyncResultBackend(url))
    made.register_task(noop, "noop")
    made.register_task(nap, "nap")
    return made


async def noop() -> None:
    """The no-op task."""


async def nap(seconds: float) -> None:
    """Workload D's task."""
    await asyncio.sleep(seconds)


broker = make_broker(os.environ.get(URL_ENV, "redis://127.0.0.1:6379/15"))


class TaskiqClient:
    """`_peers.Client` for taskiq on taskiq-redis streams."""

    wait_limit = 1

    def __init__(self) -> None:
        self.url = ""
        self.broker: RedisStreamBroker | None = None
        self.tasks: dict[str, Any] = {}

    async def open(self, params: Params) -> None:
        self.url = _servers.dedicated_redis_url(params.url)
        client = aioredis.Redis.from_url(self.url)
        await client.flushdb()
        await client.aclose()
        self.broker = make_broker(self.url)
        self.tasks = {name: self.broker.find_task(name) for name in ("noop", "nap")}
        await self.broker.startup()

    async def close(self) -> None:
        if self.broker is not None:
            await self.broker.shutdown()

    async def send(self, name: str, args: list[Any]) -> Any:
        return await self.tasks[name].kiq(*args)

    async def send_many(self, count: int) -> list[Any]:
        raise NotApplicable("taskiq has no batch enqueue API")

    async def wait(self, handle: Any) -> None:
        result = await handle.wait_result(
            check_interval=RESULT_POLL_S, timeout=_peers.RESULT_TIMEOUT_S
        )
        result.raise_for_error()

    def worker_command(self, params: Params) -> list[str]:
        os.environ[URL_ENV] = self.url
        return [
            os.path.join(os.path.dirname(sys.executable), "taskiq"),
            "worker",
            "taskiq_streams:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            str(params.concurrency),
        ]


NOTES = {
    "A2": "taskiq: no batch enqueue API (B kicks one by one, untimed).",
    "C": "taskiq: results polled every 10 ms (wait_result check_interval; default 0.2 s).",
}

if __name__ == "__main__":
    _harness.main(
        "taskiq-redis",
        _peers.workloads(TaskiqClient),
        distributions=("taskiq", "taskiq-redis", "redis"),
        notes=NOTES,
    )
