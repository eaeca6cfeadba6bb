"""taskflow on Redis: the six workloads, its worker a separate process started by its CLI.

Uses database `_servers.BENCH_REDIS_DB` (15) of the given server, FLUSHed before every run.
Run it as ``python benchmarks/adapters/taskflow_redis.py --workload B --url redis://127.0.0.1:6379``.
"""

from __future__ import annotations

import _harness
import _servers
import redis.asyncio as aioredis
from _taskflow_server import TaskflowServer


async def flush(url: str) -> None:
    """FLUSHDB the benchmark database."""
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


if __name__ == "__main__":
    _harness.main(
        "taskflow-redis",
        TaskflowServer(_servers.dedicated_redis_url, flush).workloads(),
        distributions=("taskflow", "redis", "hiredis", "msgspec"),
    )
