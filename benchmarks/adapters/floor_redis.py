"""The Redis floor: a bare redis-py loop, the least any queue on this Redis can cost.

The producer LPUSHes msgspec-msgpack messages (one command per message in A1, one per batch in
A2 and B); the worker, a separate process (``floor_redis.py worker URL --concurrency C``), pops
up to C messages per round trip (``BRPOP`` for the first when idle, ``RPOP key count`` for the
rest), runs them concurrently, then writes every result with ``SET`` and announces the batch's
ids with one ``PUBLISH``, all in one pipeline. No ids beyond a counter, no records, leases,
retries or events. The producer's subscriber resolves one future per id. Uses database
`_servers.BENCH_REDIS_DB` (15), FLUSHed before each run.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import _harness
import _servers
import msgspec
import redis.asyncio as aioredis
from _harness import Metrics, Params

QUEUE = "floor:queue"
DONE_CHANNEL = "floor:done:"
"""Plus the database number: pub/sub channels are server-wide, databases are not."""
RESULT_PREFIX = "floor:result:"
RESULT_TIMEOUT_S = 120.0

encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder()


class Message(msgspec.Struct, array_like=True):
    """One task on the wire."""

    id: str
    name: str
    args: list[Any]


# -- the worker process -----------------------------------------------------------------------


async def run_task(message: Message) -> None:
    """The two tasks: ``noop`` and ``nap(seconds)``."""
    if message.name == "nap":
        await asyncio.sleep(message.args[0])


async def serve(url: str, concurrency: int) -> None:
    """Pop up to `concurrency` messages per round trip, run them, write results in one pipeline."""
    client = aioredis.Redis.from_url(url)
    while True:
        first = await client.brpop([QUEUE], timeout=1)
        if first is None:
            continue
        raw = [first[1]]
        more = await client.rpop(QUEUE, concurrency - 1)
        raw += more or []
        messages = [msgspec.msgpack.decode(item, type=Message) for item in raw]
        await asyncio.gather(*(run_task(m) for m in messages))
        async with client.pipeline(transaction=False) as pipe:
            for message in messages:
                pipe.set(RESULT_PREFIX + message.id, encoder.encode(None), ex=3600)
            pipe.publish(done_channel(url), ",".join(m.id for m in messages))
            await pipe.execute()


def done_channel(url: str) -> str:
    """The done channel of the database `url` names."""
    return DONE_CHANNEL + urlsplit(url).path.strip("/")


def worker_main(argv: list[str]) -> None:
    """``floor_redis.py worker URL --concurrency C``: serve until SIGTERM."""
    url, concurrency = argv[0], int(argv[argv.index("--concurrency") + 1])
    try:
        import uvloop

        uvloop.run(serve(url, concurrency))
    except ImportError:
        asyncio.run(serve(url, concurrency))


# -- the producer -----------------------------------------------------------------------------


class Producer:
    """Enqueues messages and hears their results (subscribed before anything is sent)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = aioredis.Redis.from_url(url)
        self.ids = itertools.count()
        self.futures: dict[str, asyncio.Future[None]] = {}
        self.listening: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """FLUSHDB, then subscribe to the done channel."""
        await self.client.flushdb()
        pubsub = self.client.pubsub()
        await pubsub.subscribe(done_channel(self.url))
        self.listening = asyncio.create_task(self._listen(pubsub))

    async def close(self) -> None:
        """Stop listening and close the client."""
        if self.listening is not None:
            self.listening.cancel()
        await self.client.aclose()

    async def _listen(self, pubsub: Any) -> None:
        async for item in pubsub.listen():
            if item["type"] != "message":
                continue
            for task_id in item["data"].decode().split(","):
                future = self.futures.pop(task_id, None)
                if future is not None and not future.done():
                    future.set_result(None)

    def _message(self, name: str, args: list[Any]) -> tuple[bytes, asyncio.Future[None]]:
        task_id = str(next(self.ids))
        future = asyncio.get_running_loop().create_future()
        self.futures[task_id] = future
        return encoder.encode(Message(task_id, name, args)), future

    async def send(self, name: str = "noop", args: list[Any] | None = None) -> asyncio.Future[None]:
        """LPUSH one message."""
        data, future = self._message(name, args or [])
        await self.client.lpush(QUEUE, data)
        return future

    async def send_many(self, count: int) -> list[asyncio.Future[None]]:
        """LPUSH `count` no-op messages in one command."""
        pairs = [self._message("noop", []) for _ in range(count)]
        await self.client.lpush(QUEUE, *(data for data, _ in pairs))
        return [future for _, future in pairs]


def worker_command(url: str, concurrency: int) -> list[str]:
    """This script in worker mode."""
    return [sys.executable, __file__, "worker", url, "--concurrency", str(concurrency)]


async def with_producer(params: Params, body: Any, *, worker: bool) -> Metrics:
    """Run `body(producer, worker_process_or_None)` with a fresh database."""
    producer = Producer(_servers.dedicated_redis_url(params.url))
    await producer.open()
    try:
        if not worker:
            return await body(producer, None)  # type: ignore[no-any-return]
        command = worker_command(producer.url, params.concurrency)
        async with _servers.worker_process(command) as process:
            return await body(producer, process)  # type: ignore[no-any-return]
    finally:
        await producer.close()


async def enqueue_one_by_one(params: Params) -> Metrics:
    """A1: one LPUSH per message."""

    async def body(producer: Producer, _: Any) -> Metrics:
        start = time.perf_counter()
        for _ in range(params.n):
            await producer.send()
        return {"tasks_per_s": _harness.per_second(params.n, time.perf_counter() - start)}

    return await with_producer(params, body, worker=False)


async def enqueue_batched(params: Params) -> Metrics:
    """A2: one LPUSH per batch."""

    async def body(producer: Producer, _: Any) -> Metrics:
        start = time.perf_counter()
        for size in _harness.chunks(params.n, params.batch):
            await producer.send_many(size)
        return {"tasks_per_s": _harness.per_second(params.n, time.perf_counter() - start)}

    return await with_producer(params, body, worker=False)


async def process_queued(params: Params) -> Metrics:
    """B: n messages queued, then the worker started; timed from the first result to the last."""
    producer = Producer(_servers.dedicated_redis_url(params.url))
    await producer.open()
    try:
        futures: list[asyncio.Future[None]] = []
        for size in _harness.chunks(params.n, params.batch):
            futures += await producer.send_many(size)
        command = worker_command(producer.url, params.concurrency)
        async with _servers.worker_process(command) as process:
            return await _servers.drain_rate(
                process, _awaiter(futures[0]), [_awaiter(f) for f in futures[1:]]
            )
    finally:
        await producer.close()


def _awaiter(future: asyncio.Future[None]) -> Any:
    async def wait() -> None:
        await future

    return wait


async def warm_up(producer: Producer, process: _servers.WorkerProcess) -> None:
    """One task through, so the worker is up before anything is timed."""
    await _servers.watched(process, await producer.send(), 60)


async def end_to_end(params: Params) -> Metrics:
    """E2E: worker running; n messages sent one by one, then every result awaited."""

    async def body(producer: Producer, process: _servers.WorkerProcess) -> Metrics:
        await warm_up(producer, process)
        start = time.perf_counter()
        futures = [await producer.send() for _ in range(params.n)]
        await _servers.watched(process, asyncio.gather(*futures), RESULT_TIMEOUT_S)
        return {"tasks_per_s": _harness.per_second(params.n, time.perf_counter() - start)}

    return await with_producer(params, body, worker=True)


async def latency(params: Params) -> Metrics:
    """C: one message every 1/rate s, each timed from LPUSH to its result heard."""

    async def body(producer: Producer, process: _servers.WorkerProcess) -> Metrics:
        await warm_up(producer, process)

        async def send_and_wait() -> None:
            await asyncio.wait_for(await producer.send(), 30)

        return await _harness.steady_latencies(params, send_and_wait)

    return await with_producer(params, body, worker=True)


async def sleepers(params: Params) -> Metrics:
    """D: n ``nap`` messages sent one by one, then every result awaited."""

    async def body(producer: Producer, process: _servers.WorkerProcess) -> Metrics:
        await warm_up(producer, process)
        start = time.perf_counter()
        futures = [await producer.send("nap", [params.sleep_s]) for _ in range(params.n)]
        await _servers.watched(process, asyncio.gather(*futures), RESULT_TIMEOUT_S)
        return {"seconds": round(time.perf_counter() - start, 4)}

    return await with_producer(params, body, worker=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker_main(sys.argv[2:])
    else:
        _harness.main(
            "floor-redis",
            {
                "A1": enqueue_one_by_one,
                "A2": enqueue_batched,
                "B": process_queued,
                "E2E": end_to_end,
                "C": latency,
                "D": sleepers,
            },
            distributions=("redis", "hiredis", "msgspec"),
        )
