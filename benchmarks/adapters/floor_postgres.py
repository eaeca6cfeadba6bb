"""The PostgreSQL floor: a bare asyncpg loop, the least any queue on this PostgreSQL can cost.

One table ``floor_bench.jobs`` (dropped and re-created before each run). The producer INSERTs
one row per statement (A1) or a batch per statement via ``unnest`` (A2, B), each statement also
NOTIFYing ``<schema>_new``. The worker, a separate process (``floor_postgres.py worker DSN
--concurrency C``), claims up to C rows per statement (``UPDATE ... WHERE id IN (SELECT ... FOR
UPDATE SKIP LOCKED LIMIT C) RETURNING``), runs them concurrently, and completes the whole batch
in one statement that also NOTIFYs ``<schema>_done`` with the ids; when nothing is due it sleeps on
LISTEN ``<schema>_new``. No leases, retries, tokens or events.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import _harness
import _servers
import asyncpg
from _harness import Metrics, Params

SCHEMA = _servers.bench_schema("floor_bench")
NEW_CHANNEL = f"{SCHEMA}_new"
DONE_CHANNEL = f"{SCHEMA}_done"
"""Channels are database-wide: named after the schema, so two runs never hear each other."""
RESULT_TIMEOUT_S = 120.0

CREATE = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.jobs (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name    text NOT NULL,
    args    text NOT NULL,
    status  smallint NOT NULL DEFAULT 0,
    result  text
);
CREATE INDEX jobs_queued ON {SCHEMA}.jobs (id) WHERE status = 0;
"""
INSERT_ONE = f"""
WITH new AS (INSERT INTO {SCHEMA}.jobs (name, args) VALUES ($1, $2) RETURNING id)
SELECT id, pg_notify('{NEW_CHANNEL}', '') FROM new
"""
INSERT_MANY = f"""
WITH new AS (
    INSERT INTO {SCHEMA}.jobs (name, args) SELECT 'noop', '[]' FROM generate_series(1, $1)
    RETURNING id
)
SELECT array_agg(id ORDER BY id) AS ids, pg_notify('{NEW_CHANNEL}', '') FROM new
"""
CLAIM = f"""
UPDATE {SCHEMA}.jobs SET status = 1
WHERE id IN (
    SELECT id FROM {SCHEMA}.jobs WHERE status = 0 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, name, args
"""
COMPLETE = f"""
WITH done AS (
    UPDATE {SCHEMA}.jobs SET status = 2, result = 'null' WHERE id = ANY($1::bigint[]) RETURNING id
)
SELECT pg_notify('{DONE_CHANNEL}', string_agg(id::text, ',')) FROM done
"""


# -- the worker process -----------------------------------------------------------------------


async def run_job(name: str, args: str) -> None:
    """The two tasks: ``noop`` and ``nap(seconds)``."""
    if name == "nap":
        await asyncio.sleep(json.loads(args)[0])


async def serve(dsn: str, concurrency: int) -> None:
    """Claim up to `concurrency` rows per statement, run them, complete them in one statement."""
    conn = await asyncpg.connect(dsn)
    wake = asyncio.Event()
    await conn.add_listener(NEW_CHANNEL, lambda *_: wake.set())
    while True:
        wake.clear()
        rows = await conn.fetch(CLAIM, concurrency)
        if not rows:
            try:
                await asyncio.wait_for(wake.wait(), 1.0)
            except TimeoutError:
                pass
            continue
        await asyncio.gather(*(run_job(row["name"], row["args"]) for row in rows))
        await conn.execute(COMPLETE, [row["id"] for row in rows])


def worker_main(argv: list[str]) -> None:
    """``floor_postgres.py worker DSN --concurrency C``: serve until SIGTERM."""
    dsn, concurrency = argv[0], int(argv[argv.index("--concurrency") + 1])
    try:
        import uvloop

        uvloop.run(serve(dsn, concurrency))
    except ImportError:
        asyncio.run(serve(dsn, concurrency))


# -- the producer -----------------------------------------------------------------------------


class Producer:
    """Inserts jobs and hears their completion (listening before anything is sent)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: Any = None
        self.listener: Any = None
        self.futures: dict[int, asyncio.Future[None]] = {}
        self.early: set[int] = set()

    async def open(self) -> None:
        """Re-create the table, then LISTEN for completions on a connection of its own (sends
        go through a small pool, so C's overlapping sends do not queue on one connection)."""
        self.conn = await asyncpg.create_pool(self.dsn, min_size=1, max_size=10)
        await self.conn.execute(CREATE)
        self.listener = await asyncpg.connect(self.dsn)
        await self.listener.add_listener(DONE_CHANNEL, self._done)

    async def close(self) -> None:
        """Close the listening connection and the pool."""
        if self.listener is not None:
            await self.listener.close()
        if self.conn is not None:
            await self.conn.close()

    def _done(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for raw in payload.split(","):
            future = self.futures.pop(int(raw), None)
            if future is None:
                self.early.add(int(raw))  # done before its INSERT returned its id
            elif not future.done():
                future.set_result(None)

    def _future(self, job_id: int) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        if job_id in self.early:
            self.early.discard(job_id)
            future.set_result(None)
        else:
            self.futures[job_id] = future
        return future

    async def send(self, name: str = "noop", args: list[Any] | None = None) -> asyncio.Future[None]:
        """INSERT one job (and NOTIFY) in one statement."""
        row = await self.conn.fetchrow(INSERT_ONE, name, json.dumps(args or []))
        return self._future(row["id"])

    async def send_many(self, count: int) -> list[asyncio.Future[None]]:
        """INSERT `count` no-op jobs in one statement."""
        row = await self.conn.fetchrow(INSERT_MANY, count)
        return [self._future(job_id) for job_id in row["ids"]]


def worker_command(dsn: str, concurrency: int) -> list[str]:
    """This script in worker mode."""
    return [sys.executable, __file__, "worker", dsn, "--concurrency", str(concurrency)]


async def with_producer(params: Params, body: Any, *, worker: bool) -> Metrics:
    """Run `body(producer, worker_process_or_None)` on a fresh table."""
    producer = Producer(_servers.postgres_url(params.url))
    await producer.open()
    try:
        if not worker:
            return await body(producer, None)  # type: ignore[no-any-return]
        command = worker_command(producer.dsn, params.concurrency)
        async with _servers.worker_process(command) as process:
            await _servers.watched(process, await producer.send(), 60)  # warm-up
            return await body(producer, process)  # type: ignore[no-any-return]
    finally:
        await producer.close()


async def enqueue_one_by_one(params: Params) -> Metrics:
    """A1: one INSERT per job."""

    async def body(producer: Producer, _: Any) -> Metrics:
        start = time.perf_counter()
        for _ in range(params.n):
            await producer.send()
        return {"tasks_per_s": _harness.per_second(params.n, time.perf_counter() - start)}

    return await with_producer(params, body, worker=False)


async def enqueue_batched(params: Params) -> Metrics:
    """A2: one INSERT per batch."""

    async def body(producer: Producer, _: Any) -> Metrics:
        start = time.perf_counter()
        for size in _harness.chunks(params.n, params.batch):
            await producer.send_many(size)
        return {"tasks_per_s": _harness.per_second(params.n, time.perf_counter() - start)}

    return await with_producer(params, body, worker=False)


def _awaiter(future: asyncio.Future[None]) -> Any:
    async def wait() -> None:
        await future

    return wait


async def process_queued(params: Params) -> Metrics:
    """B: n jobs inserted, then the worker started; timed from the first result to the last."""
    producer = Producer(_servers.postgres_url(params.url))
    await producer.open()
    try:
        futures: list[asyncio.Future[None]] = []
        for size in _harness.chunks(params.n, params.batch):
            futures += await producer.send_many(size)
        command = worker_command(producer.dsn, params.concurrency)
        async with _servers.worker_process(command) as process:
            return await _servers.drain_rate(
                process, _awaiter(futures[0]), [_awaiter(f) for f in futures[1:]]
            )
    finally:
        await producer.close()


async def end_to_end(params: Params) -> Metrics:
    """E2E: worker running; n jobs inserted one by one, then every completion awaited."""

    async def body(producer: Producer, process: _servers.WorkerProcess) -> Metrics:
        start = time.perf_counter()
        futures = [await producer.send() for _ in range(params.n)]
        await _servers.watched(process, asyncio.gather(*futures), RESULT_TIMEOUT_S)
        return {"tasks_per_s": _harness.per_second(params.n, time.perf_counter() - start)}

    return await with_producer(params, body, worker=True)


async def latency(params: Params) -> Metrics:
    """C: one job every 1/rate s, each timed from INSERT to its completion heard."""

    async def body(producer: Producer, process: _servers.WorkerProcess) -> Metrics:
        async def send_and_wait() -> None:
            await asyncio.wait_for(await producer.send(), 30)

        return await _harness.steady_latencies(params, send_and_wait)

    return await with_producer(params, body, worker=True)


async def sleepers(params: Params) -> Metrics:
    """D: n ``nap`` jobs inserted one by one, then every completion awaited."""

    async def body(producer: Producer, process: _servers.WorkerProcess) -> Metrics:
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
            "floor-postgres",
            {
                "A1": enqueue_one_by_one,
                "A2": enqueue_batched,
                "B": process_queued,
                "E2E": end_to_end,
                "C": latency,
                "D": sleepers,
            },
            distributions=("asyncpg",),
        )
