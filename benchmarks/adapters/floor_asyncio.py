"""The floor: the same workloads through a bare `asyncio.Queue`, one future per message.

No system can move a task through one event loop for less than this: a message is put on an
`asyncio.Queue`, one of ``concurrency`` consumer coroutines takes it, runs the task coroutine and
sets the message's future, which the producer awaits. No ids beyond a counter, no encoding, no
records, leases or events: the cost of the loop itself. Run it as
``python benchmarks/adapters/floor_asyncio.py --workload E2E --n 10000``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import _harness
from _harness import Metrics, Params

Message = dict[str, Any]


async def noop() -> None:
    """The no-op task."""


async def nap(seconds: float) -> None:
    """Workload D's task: sleep, then return."""
    await asyncio.sleep(seconds)


TASKS: dict[str, Callable[..., Awaitable[Any]]] = {"noop": noop, "nap": nap}


class FloorQueue:
    """A queue of messages with one future each, and the consumers that run them."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Message, asyncio.Future[Any]]] = asyncio.Queue()
        self.ids = itertools.count()
        self.loop = asyncio.get_running_loop()

    def _message(self, name: str, args: tuple[Any, ...]) -> Message:
        return {"id": str(next(self.ids)), "name": name, "args": args, "kwargs": {}}

    async def enqueue(self, name: str, *args: Any) -> asyncio.Future[Any]:
        """Put one message on the queue; the future resolves to the task's result."""
        future: asyncio.Future[Any] = self.loop.create_future()
        self.queue.put_nowait((self._message(name, args), future))
        return future

    async def enqueue_many(self, name: str, count: int) -> list[asyncio.Future[Any]]:
        """Put `count` messages on the queue in one call."""
        futures = [self.loop.create_future() for _ in range(count)]
        put = self.queue.put_nowait
        for future in futures:
            put((self._message(name, ()), future))
        return futures

    async def _consume(self) -> None:
        get = self.queue.get
        while True:
            message, future = await get()
            try:
                result = await TASKS[message["name"]](*message["args"], **message["kwargs"])
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    @contextlib.asynccontextmanager
    async def running(self, concurrency: int) -> AsyncIterator[None]:
        """Run `concurrency` consumers for the duration of the block."""
        consumers = [asyncio.create_task(self._consume()) for _ in range(concurrency)]
        try:
            yield
        finally:
            for consumer in consumers:
                consumer.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)


async def enqueue_one_by_one(params: Params) -> Metrics:
    """A1: put n messages one call each, no consumer running."""
    floor = FloorQueue()
    start = time.perf_counter()
    for _ in range(params.n):
        await floor.enqueue("noop")
    return {"tasks_per_s": _harness.per_second(params.n, time.perf_counter() - start)}


async def enqueue_batched(params: Params) -> Metrics:
    """A2: put n messages in batches of ``params.batch``."""
    floor = FloorQueue()
    start = time.perf_counter()
    for size in _harness.chunks(params.n, params.batch):
        await floor.enqueue_many("noop", size)
    return {"tasks_per_s": _harness.per_second(params.n, time.perf_counter() - start)}


async def process_queued(params: Params) -> Metrics:
    """B: n messages queued first; timed from starting the consumers to the last result."""
    floor = FloorQueue()
    futures: list[asyncio.Future[Any]] = []
    for size in _harness.chunks(params.n, params.batch):
        futures += await floor.enqueue_many("noop", size)
    start = time.perf_counter()
    async with floor.running(params.concurrency):
        for future in futures:
            await future
        elapsed = time.perf_counter() - start
    return {"tasks_per_s": _harness.per_second(params.n, elapsed)}


async def end_to_end(params: Params) -> Metrics:
    """E2E: consumers running; enqueue n one by one, then await every result."""
    floor = FloorQueue()
    async with floor.running(params.concurrency):
        start = time.perf_counter()
        futures = [await floor.enqueue("noop") for _ in range(params.n)]
        for future in futures:
            await future
        elapsed = time.perf_counter() - start
    return {"tasks_per_s": _harness.per_second(params.n, elapsed)}


async def latency(params: Params) -> Metrics:
    """C: one message every 1/rate s, each timed from enqueue to its result."""
    floor = FloorQueue()

    async def send_and_wait() -> None:
        await (await floor.enqueue("noop"))

    async with floor.running(params.concurrency):
        return await _harness.steady_latencies(params, send_and_wait)


async def sleepers(params: Params) -> Metrics:
    """D: n tasks of ``sleep(params.sleep_s)`` one by one, then await every result."""
    floor = FloorQueue()
    async with floor.running(params.concurrency):
        start = time.perf_counter()
        futures = [await floor.enqueue("nap", params.sleep_s) for _ in range(params.n)]
        for future in futures:
            await future
        elapsed = time.perf_counter() - start
    return {"seconds": round(elapsed, 4)}


if __name__ == "__main__":
    _harness.main(
        "floor-asyncio",
        {
            "A1": enqueue_one_by_one,
            "A2": enqueue_batched,
            "B": process_queued,
            "E2E": end_to_end,
            "C": latency,
            "D": sleepers,
        },
    )
