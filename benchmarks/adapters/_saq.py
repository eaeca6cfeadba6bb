"""SAQ's side of the benchmark, shared by ``saq_redis.py`` and ``saq_postgres.py``.

The worker is SAQ's CLI, ``saq <adapter>.settings``, with SAQ's defaults except
``concurrency`` (100). Results are waited for with ``Job.refresh(until_complete=...)``, which
listens for the job's status push (Redis pub/sub; PostgreSQL LISTEN/NOTIFY). SAQ has no single
round-trip batch enqueue: its ``Queue.map`` gathers one ``enqueue`` per job concurrently, so A2
does exactly that per batch (noted in the table).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _peers
from _harness import Params
from saq import Queue

URL_ENV = "BENCH_SAQ_URL"
CONCURRENCY_ENV = "BENCH_CONCURRENCY"
RECHECK_S = 0.5
"""SAQ's own default poll interval (``Queue.apply``/``map``), used to recover lost pushes."""


async def noop(ctx: dict[str, Any]) -> None:
    """The no-op task."""


async def nap(ctx: dict[str, Any], *, seconds: float) -> None:
    """Workload D's task."""
    await asyncio.sleep(seconds)


def worker_settings() -> dict[str, Any]:
    """The ``settings`` object SAQ's CLI runs (URL and concurrency from the environment)."""
    return {
        "queue": Queue.from_url(os.environ.get(URL_ENV, "redis://127.0.0.1:6379/15")),
        "functions": [noop, nap],
        "concurrency": int(os.environ.get(CONCURRENCY_ENV, "100")),
    }


class SaqClient:
    """`_peers.Client` for SAQ on any of its queues; `resolve` and `reset` say which server."""

    wait_limit = 50

    def __init__(
        self, module: str, resolve: Callable[[Params], str], reset: Callable[[str], Awaitable[None]]
    ) -> None:
        self.module = module
        self.resolve = resolve
        self.reset = reset
        self.url = ""
        self.queue: Queue | None = None
        self.lost = 0

    async def open(self, params: Params) -> None:
        self.url = self.resolve(params)
        await self.reset(self.url)
        self.queue = Queue.from_url(self.url)
        await self.queue.connect()

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.disconnect()

    async def send(self, name: str, args: list[Any]) -> Any:
        assert self.queue is not None
        kwargs = {"seconds": args[0]} if name == "nap" else {}
        return await self.queue.enqueue(name, **kwargs)

    async def send_many(self, count: int) -> list[Any]:
        assert self.queue is not None
        return list(await asyncio.gather(*(self.queue.enqueue("noop") for _ in range(count))))

    async def wait(self, handle: Any) -> None:
        # refresh() reads the job, then subscribes: a job finishing in between is never
        # announced to it, so each wait is bounded by SAQ's own poll interval and re-read.
        deadline = time.monotonic() + _peers.RESULT_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                await handle.refresh(until_complete=RECHECK_S)
            except TimeoutError:
                await handle.refresh()
                if not handle.completed:
                    continue
                self.lost += 1
            return
        raise TimeoutError(f"SAQ job {handle.key} not complete in {_peers.RESULT_TIMEOUT_S} s")

    def worker_command(self, params: Params) -> list[str]:
        os.environ[URL_ENV] = self.url
        os.environ[CONCURRENCY_ENV] = str(params.concurrency)
        return [os.path.join(os.path.dirname(sys.executable), "saq"), f"{self.module}.settings"]


NOTES = {
    "C": "SAQ: Job.refresh(until_complete) reads the job before it subscribes, so a job "
    "finishing in between is never announced; waits re-read after 0.5 s (SAQ's default poll "
    "interval); lost_notifications counts them.",
    "A2": "SAQ: no batch enqueue in one round trip; A2 gathers one enqueue per job per batch, "
    "as SAQ's own Queue.map does.",
}
