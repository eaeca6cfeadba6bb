"""SAQ on Redis, in its own venv; worker: SAQ's CLI ``saq saq_redis.settings`` (see `_saq`).

Database `_servers.BENCH_REDIS_DB` (15), FLUSHed before each run.
"""

from __future__ import annotations

import _harness
import _peers
import _saq
import _servers
import redis.asyncio as aioredis
from _harness import Params

settings = _saq.worker_settings() if __name__ != "__main__" else None


def resolve(params: Params) -> str:
    """The dedicated benchmark database of ``--url``."""
    return _servers.dedicated_redis_url(params.url)


async def flush(url: str) -> None:
    """FLUSHDB the benchmark database."""
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


if __name__ == "__main__":
    _harness.main(
        "saq-redis",
        _peers.workloads(lambda: _saq.SaqClient("saq_redis", resolve, flush)),
        distributions=("saq", "redis"),
        notes=_saq.NOTES,
    )
