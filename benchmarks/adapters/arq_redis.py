"""arq on Redis, in its own venv; its worker is arq's CLI, ``arq arq_redis.WorkerSettings``.

Settings: arq's defaults (the worker polls the queue every ``poll_delay`` 0.5 s when idle, keeps
results 1 day) except ``max_jobs = concurrency`` (100). arq has no batch enqueue (A2 is n/a; B
queues one by one, untimed). Results are polled (`Job.result`); here every 10 ms, one waiter at a
time in enqueue order, far more often than arq's default 0.5 s (favourable to arq). Database
`_servers.BENCH_REDIS_DB` (15), FLUSHed before each run.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import _harness
import _peers
import _servers
from _harness import NotApplicable, Params
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

URL_ENV = "BENCH_REDIS_URL"
RESULT_POLL_S = 0.01


async def noop(ctx: dict[str, Any]) -> None:
    """The no-op task."""


async def nap(ctx: dict[str, Any], seconds: float) -> None:
    """Workload D's task."""
    await asyncio.sleep(seconds)


class WorkerSettings:
    """What ``arq arq_redis.WorkerSettings`` runs (the URL and max_jobs from the environment)."""

    functions = (noop, nap)
    redis_settings = RedisSettings.from_dsn(os.environ.get(URL_ENV, "redis://127.0.0.1:6379/15"))
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "100"))


class ArqClient:
    """`_peers.Client` for arq."""

    wait_limit = 1

    def __init__(self) -> None:
        self.pool: ArqRedis | None = None
        self.url = ""

    async def open(self, params: Params) -> None:
        self.url = _servers.dedicated_redis_url(params.url)
        self.pool = await create_pool(RedisSettings.from_dsn(self.url))
        await self.pool.flushdb()

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()

    async def send(self, name: str, args: list[Any]) -> Any:
        assert self.pool is not None
        return await self.pool.enqueue_job(name, *args)

    async def send_many(self, count: int) -> list[Any]:
        raise NotApplicable("arq has no batch enqueue API")

    async def wait(self, handle: Any) -> None:
        await handle.result(timeout=_peers.RESULT_TIMEOUT_S, poll_delay=RESULT_POLL_S)

    def worker_command(self, params: Params) -> list[str]:
        os.environ[URL_ENV] = self.url
        os.environ["BENCH_CONCURRENCY"] = str(params.concurrency)
        return [os.path.join(os.path.dirname(sys.executable), "arq"), "arq_redis.WorkerSettings"]


NOTES = {
    "A2": "arq: no batch enqueue API (B queues one by one, untimed).",
    "C": "arq: results polled every 10 ms (arq's default 0.5 s); the worker polls its queue "
    "every 0.5 s when idle (arq's default poll_delay).",
}

if __name__ == "__main__":
    _harness.main(
        "arq-redis", _peers.workloads(ArqClient), distributions=("arq", "redis"), notes=NOTES
    )
