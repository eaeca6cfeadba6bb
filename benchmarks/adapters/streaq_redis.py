"""streaQ on Redis (coredis), in its own venv; worker: ``streaq run streaq_redis:worker``.

Settings: streaQ's defaults except ``concurrency`` (100). Results: ``Task.result()``, which
subscribes to the task's channel before it reads the stored result (push, no polling). Batch
enqueue: ``Worker.enqueue_many`` (one pipeline). Database `_servers.BENCH_REDIS_DB` (15),
FLUSHed before each run.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import _harness
import _peers
import _servers
import anyio
from _harness import Params
from streaq import Worker

URL_ENV = "BENCH_REDIS_URL"


def make_worker(url: str, concurrency: int) -> Worker[Any]:
    """A streaQ worker (also the producer's client) with the tasks ``noop`` and ``nap``."""
    made: Worker[Any] = Worker(redis_url=url, concurrency=concurrency)

    @made.task
    async def noop() -> None:
        return None

    @made.task
    async def nap(seconds: float) -> None:
        await anyio.sleep(seconds)

    return made


worker = make_worker(
    os.environ.get(URL_ENV, "redis://127.0.0.1:6379/15"),
    int(os.environ.get("BENCH_CONCURRENCY", "100")),
)


class StreaqClient:
    """`_peers.Client` for streaQ."""

    wait_limit = 50

    def __init__(self) -> None:
        self.url = ""
        self.worker: Worker[Any] | None = None
        self.tasks: dict[str, Any] = {}
        self.stack = contextlib.AsyncExitStack()

    async def open(self, params: Params) -> None:
        self.url = _servers.dedicated_redis_url(params.url)
        self.worker = make_worker(self.url, params.concurrency)
        self.tasks = {task.fn.__name__: task for task in self.worker.registry.values()}
        await self.stack.enter_async_context(self.worker)
        await self.worker.redis.flushdb()

    async def close(self) -> None:
        await self.stack.aclose()

    async def send(self, name: str, args: list[Any]) -> Any:
        return await self.tasks[name].enqueue(*args)

    async def send_many(self, count: int) -> list[Any]:
        assert self.worker is not None
        tasks = [self.tasks["noop"].enqueue() for _ in range(count)]
        await self.worker.enqueue_many(tasks)
        return tasks

    async def wait(self, handle: Any) -> None:
        result = await handle.result(timeout=int(_peers.RESULT_TIMEOUT_S))
        if not result.success:
            raise RuntimeError(f"streaQ task failed: {result}")

    def worker_command(self, params: Params) -> list[str]:
        os.environ[URL_ENV] = self.url
        os.environ["BENCH_CONCURRENCY"] = str(params.concurrency)
        streaq = os.path.join(os.path.dirname(sys.executable), "streaq")
        return [streaq, "run", "streaq_redis:worker"]


if __name__ == "__main__":
    _harness.main(
        "streaq-redis", _peers.workloads(StreaqClient), distributions=("streaq", "coredis")
    )
