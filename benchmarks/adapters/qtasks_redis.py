"""qtasks (the framework of the seed diagrams, PyPI ``qtasks``) on Redis, in its own venv.

Worker: qtasks's CLI, ``qtasks -A qtasks_redis:app run`` (its defaults: 4 sub-workers), with
``config.max_tasks_process`` raised to the concurrency (100). Its broker LPOPs one message per
round trip and sleeps 10 ms when the queue is empty. Results are polled (`AsyncResult.result`,
every ``config.result_time_interval``), here every 10 ms (default 1 s), one waiter at a time in
enqueue order (favourable to qtasks). No batch enqueue (A2 n/a; B sends one by one, untimed).
Database `_servers.BENCH_REDIS_DB` (15), FLUSHed before each run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import _harness
import _peers
import _servers
import redis.asyncio as aioredis
from _harness import NotApplicable, Params
from qtasks.asyncio import QueueTasks
from qtasks.results.async_result import AsyncResult

URL_ENV = "BENCH_REDIS_URL"
RESULT_POLL_S = 0.01


def make_app(url: str, concurrency: int) -> QueueTasks:
    """A qtasks app on `url` with the tasks ``noop`` and ``nap``."""
    made = QueueTasks(name="bench", broker_url=url)
    made.config.max_tasks_process = concurrency
    made.config.result_time_interval = RESULT_POLL_S
    made.config.logs_default_level_server = logging.WARNING
    made.config.logs_default_level_client = logging.WARNING

    @made.task(name="noop")
    async def noop() -> None:
        return None

    @made.task(name="nap")
    async def nap(seconds: float) -> None:
        await asyncio.sleep(seconds)

    return made


app = make_app(
    os.environ.get(URL_ENV, "redis://127.0.0.1:6379/15"),
    int(os.environ.get("BENCH_CONCURRENCY", "100")),
)


class QtasksClient:
    """`_peers.Client` for qtasks."""

    wait_limit = 1

    def __init__(self) -> None:
        self.url = ""
        self.app: QueueTasks | None = None

    async def open(self, params: Params) -> None:
        self.url = _servers.dedicated_redis_url(params.url)
        client = aioredis.Redis.from_url(self.url)
        await client.flushdb()
        await client.aclose()
        self.app = make_app(self.url, params.concurrency)

    async def close(self) -> None:
        """qtasks's client has nothing to close."""

    async def send(self, name: str, args: list[Any]) -> Any:
        assert self.app is not None
        return await self.app.add_task(name, *args)

    async def send_many(self, count: int) -> list[Any]:
        raise NotApplicable("qtasks has no batch enqueue API")

    async def wait(self, handle: Any) -> None:
        assert self.app is not None
        waiter = AsyncResult(uuid=handle.uuid, app=self.app, log=self.app.log)
        task = await waiter.result(timeout=_peers.RESULT_TIMEOUT_S)
        if task is None or task.status != "success":
            raise RuntimeError(f"qtasks task {handle.uuid} ended as {task}")

    def worker_command(self, params: Params) -> list[str]:
        os.environ[URL_ENV] = self.url
        os.environ["BENCH_CONCURRENCY"] = str(params.concurrency)
        qtasks = os.path.join(os.path.dirname(sys.executable), "qtasks")
        return [qtasks, "-A", "qtasks_redis:app", "run"]


NOTES = {
    "A2": "qtasks: no batch enqueue API (B sends one by one, untimed).",
    "C": "qtasks: results polled every 10 ms (config.result_time_interval; default 1 s).",
}

if __name__ == "__main__":
    _harness.main(
        "qtasks-redis",
        _peers.workloads(QtasksClient),
        distributions=("qtasks", "redis"),
        notes=NOTES,
    )
