"""PostgreSQL on the latency path: an idle worker runs a task when it becomes due, woken by the
change's own notification, never by its idle sweep (``idle_poll_s``, set far above the times
measured here), and the calls between a send and its result make no round trip they can spare.

A producer and a worker are two brokers on one schema, as two processes would have: the worker
hears of the producer's changes only through LISTEN/NOTIFY.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

from taskflow import GlobalConfig, QueueTasks, TaskFailed, TaskOutcome, TaskStatus
from taskflow.postgres import PostgresBroker, _listener, from_url
from taskflow.postgres._growth import PoolGrowth
from taskflow.postgres._sql_broker import PUSHED_RESULT_MAX
from taskflow.testing import FakeClock
from tests.conformance._helpers import claim, done, message
from tests.plugins.backend_postgres import drop_schema, random_schema
from tests.services import postgres_dsn

pytestmark = pytest.mark.postgres

IDLE_POLL_S = 5.0


@pytest.fixture
async def pair() -> AsyncIterator[tuple[PostgresBroker, PostgresBroker]]:
    """A producer's and a worker's broker on one fresh schema."""
    dsn, schema = postgres_dsn(), random_schema()
    try:
        async with from_url(dsn, schema=schema) as producer, from_url(dsn, schema=schema) as worker:
            yield producer, worker
    finally:
        await drop_schema(dsn, schema)


def app_on(broker: PostgresBroker) -> QueueTasks:
    """An app on `broker` with the tasks ``flaky`` (fails every attempt; one retry, 0.1 s) and
    ``noop``."""
    app = QueueTasks("wakeups", broker=broker, config=GlobalConfig(idle_poll_s=IDLE_POLL_S))

    @app.task(name="flaky", retries=1, retry_backoff=0.1)
    async def flaky() -> None:
        raise ValueError("fails every time")

    @app.task(name="noop")
    async def noop() -> str:
        return "ran"

    return app


@pytest.mark.slow
async def test_a_retry_sooner_than_the_idle_poll_runs_when_due(
    pair: tuple[PostgresBroker, PostgresBroker],
) -> None:
    producer_broker, worker_broker = pair
    producer, worker = app_on(producer_broker), app_on(worker_broker)
    with anyio.fail_after(4 * IDLE_POLL_S):
        async with producer, worker, worker.running(concurrency=20):
            started = time.perf_counter()
            handle = await producer.add_task("flaky")
            with pytest.raises(TaskFailed):
                await handle.result(timeout=4 * IDLE_POLL_S)
            took = time.perf_counter() - started
            info = await handle.info()
    assert info.attempts == 2
    # The retry is due 0.05-0.1 s after the first failure; the idle sweep would take 5 s.
    assert took < IDLE_POLL_S / 2, f"the final failure came after {took:.2f} s"


@pytest.mark.slow
async def test_a_delayed_task_runs_when_due(pair: tuple[PostgresBroker, PostgresBroker]) -> None:
    producer_broker, worker_broker = pair
    producer, worker = app_on(producer_broker), app_on(worker_broker)
    with anyio.fail_after(4 * IDLE_POLL_S):
        async with producer, worker, worker.running(concurrency=20):
            started = time.perf_counter()
            handle = await producer.add_task("noop", delay=0.2)
            assert await handle.result(timeout=4 * IDLE_POLL_S) == "ran"
            took = time.perf_counter() - started
    assert 0.2 <= took < IDLE_POLL_S / 2, f"the delayed task ended after {took:.2f} s"


# -- round trips ---------------------------------------------------------------------------------


async def test_a_pooled_call_is_not_followed_by_a_reset_statement(
    pair: tuple[PostgresBroker, PostgresBroker],
) -> None:
    # asyncpg's pool resets a returned connection with one more statement by default (RESET ALL,
    # UNLISTEN *, ...), a round trip each call waited for; taskflow's sessions keep no state.
    broker, _ = pair
    await broker.stats(["default"], now=0.0)
    admin = await asyncpg.connect(postgres_dsn())
    try:
        last = await admin.fetch(
            "SELECT query FROM pg_stat_activity WHERE application_name = $1 AND query <> ''",
            broker.pg.application_name,
        )
    finally:
        await admin.close()
    assert last, "the pool's connection is not in pg_stat_activity"
    assert not [row["query"] for row in last if "RESET ALL" in row["query"]]


class _StubPool:
    """What `PoolGrowth` uses of an asyncpg pool. A connection is taken if one is idle, else
    opened, which takes until the test lets it (`open_next`)."""

    def __init__(self) -> None:
        self.size, self.idle, self.max_size = 1, 1, 10
        self.openings: list[anyio.Event] = []

    def get_size(self) -> int:
        return self.size

    def get_max_size(self) -> int:
        return self.max_size

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[object]:
        if self.idle:
            self.idle -= 1
        else:
            opened = anyio.Event()
            self.openings.append(opened)
            await opened.wait()
            self.size += 1
        try:
            yield object()
        finally:
            self.idle += 1


async def test_the_pool_grows_beside_the_calls_not_on_their_path() -> None:
    pool = _StubPool()
    warmed: list[object] = []

    async def warm(conn: object) -> None:
        warmed.append(conn)

    growth = PoolGrowth(warm)  # type: ignore[arg-type]
    done: list[str] = []

    async def call(name: str) -> None:
        await growth.enter(pool)  # type: ignore[arg-type]
        async with pool.acquire():
            done.append(name)
        growth.leave()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await growth.enter(pool)  # type: ignore[arg-type]  # A holds the one connection
            async with pool.acquire():
                tg.start_soon(call, "B")
                tg.start_soon(call, "C")
                await anyio.wait_all_tasks_blocked()
                # Every connection is busy: B and C wait, and one connection is being opened
                # beside them (not two, and not by either of them).
                assert done == [] and len(pool.openings) == 1
            growth.leave()  # A is done: B takes its connection, before the new one is open
            await anyio.wait_all_tasks_blocked()
            assert done == ["B", "C"] and len(pool.openings) == 1
            pool.openings[0].set()  # the new connection opens, is warmed, and stays idle
    assert len(warmed) == 1 and (pool.size, pool.idle) == (2, 2)


@pytest.mark.slow
async def test_a_call_that_finds_the_pool_busy_does_not_wait_for_the_busy_call(
    pair: tuple[PostgresBroker, PostgresBroker],
) -> None:
    storage = pair[0].pg
    order: list[str] = []

    async def slow() -> None:
        await storage.run(lambda conn: conn.execute("SELECT pg_sleep(0.5)"))
        order.append("slow")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            await anyio.wait_all_tasks_blocked()
            await storage.run(lambda conn: conn.fetchval("SELECT 1"))
            order.append("quick")
    assert order == ["quick", "slow"]  # it took the connection opened beside it


def record_statements(broker: PostgresBroker, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the statements `broker` runs from now on, in order."""
    storage = broker.pg
    names = {sql: name for name, sql in (vars(storage.sql) | vars(broker.sql)).items()}
    seen: list[str] = []
    run = storage.run

    async def recorded(op: Callable[[Any], Awaitable[Any]]) -> Any:
        async def spy(conn: Any) -> Any:
            return await op(_Recorder(conn, names, seen))

        return await run(spy)

    monkeypatch.setattr(storage, "run", recorded)
    return seen


class _Recorder:
    """A connection that records which statement each call runs."""

    def __init__(self, conn: Any, names: dict[str, str], seen: list[str]) -> None:
        self._conn, self._names, self._seen = conn, names, seen

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self._conn, attr)

        def call(sql: str, *args: Any) -> Any:
            self._seen.append(self._names.get(sql, sql))
            return method(sql, *args)

        return call


async def test_next_due_after_a_claim_is_read_by_the_claim(
    pair: tuple[PostgresBroker, PostgresBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    producer, worker = pair
    calls = record_statements(worker, monkeypatch)
    clock = FakeClock()
    now = clock.time()
    woke = anyio.Event()
    worker.watch_work(["default"], worker_id="w1", callback=lambda: woke.set())
    await producer.enqueue([message(producer), message(producer, eta=now + 50)], now=now)
    [delivery] = await claim(worker, clock, lease_s=100)
    assert await worker.next_due(["default"], now=now) == now + 50
    assert calls == ["claim"]  # the claim read it; no second round trip
    # Something announced since the claim began: read again.
    woke = anyio.Event()
    await producer.enqueue([message(producer, eta=now + 20)], now=now)
    with anyio.fail_after(10):
        await woke.wait()
    assert await worker.next_due(["default"], now=now) == now + 20
    assert calls == ["claim", "next_due"]
    # An empty claim reads it too; this process's own complete makes it read again.
    assert await claim(worker, clock) == []
    assert await worker.next_due(["default"], now=now) == now + 20
    await worker.complete([done(delivery, clock)], now=now)
    assert await worker.next_due(["default"], now=now) == now + 20
    assert calls == ["claim", "next_due", "claim", "complete", "next_due"]


def gated_app(broker: PostgresBroker, gate: list[anyio.Event]) -> QueueTasks:
    """An app on `broker` with the task ``gated(text)``: returns `text` once ``gate[0]`` is set."""
    app = QueueTasks("reads", broker=broker)

    @app.task(name="gated")
    async def gated(text: str) -> str:
        await gate[0].wait()
        return text

    return app


@pytest.mark.parametrize(
    ("size", "reads_after_the_end"),
    [(10, []), (PUSHED_RESULT_MAX + 1, ["get_many"])],
    ids=["small-result-pushed", "large-result-read"],
)
async def test_a_result_awaited_before_the_task_ends_is_not_read_before_it_ends(
    pair: tuple[PostgresBroker, PostgresBroker],
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    reads_after_the_end: list[str],
) -> None:
    producer_broker, worker_broker = pair
    gate = [anyio.Event()]
    producer, worker = gated_app(producer_broker, gate), gated_app(worker_broker, gate)
    text = "x" * (size - (1 if size < 32 else 2))  # msgpack: `size` bytes with its header
    got: list[str] = []

    async def wait_for(handle: Any) -> None:
        got.append(await handle.result(timeout=10))

    with anyio.fail_after(20):
        async with producer, worker, worker.running(concurrency=4):
            gate[0].set()
            first = await producer.add_task("gated", args=("first",))
            assert await first.result(timeout=10) == "first"  # starts the producer's listener
            gate[0] = anyio.Event()
            reads = record_statements(producer_broker, monkeypatch)
            second = await producer.add_task("gated", args=(text,))
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_for, second)
                await anyio.wait_all_tasks_blocked()
                # Sent from here while the listener was up, and not heard to end: a read now
                # could only find it unfinished.
                assert reads == ["enqueue"]
                gate[0].set()
    assert got == [text]
    # A small result comes with its end's notification; a larger one is read once it ended.
    assert reads == ["enqueue", *reads_after_the_end]


async def test_a_pushed_result_is_the_stored_outcome(
    pair: tuple[PostgresBroker, PostgresBroker],
) -> None:
    """The outcome a ``d:`` notification carries to a waiter (no read) is the outcome part of
    the record stored; a caller that needs the whole record reads it then."""
    producer, worker = pair
    clock = FakeClock()
    [sent] = await producer.enqueue([message(producer)], now=clock.time())
    got: list[TaskOutcome] = []

    async def waiter() -> None:
        got.append(await producer.storage.wait(sent.task_id, timeout=None, now=clock.time()))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            [delivery] = await claim(worker, clock)
            await clock.advance(3)
            await worker.complete([done(delivery, clock, "ok")], now=clock.time())
    record = await producer.storage.get(sent.task_id, now=clock.time())
    assert record is not None and got == [TaskOutcome.of(record)]
    assert record.status is TaskStatus.DONE and record.finished_at == clock.time()


async def test_results_awaited_together_share_one_read(
    pair: tuple[PostgresBroker, PostgresBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fifty results awaited at once (``gather``) read their tasks in one statement: the
    waiters' reads of one loop turn are coalesced."""
    producer, worker = pair
    clock = FakeClock()
    sent = await producer.enqueue([message(producer) for _ in range(50)], now=clock.time())
    deliveries = await claim(worker, clock)
    assert all(await worker.complete([done(d, clock) for d in deliveries], now=clock.time()))
    await producer.pg.listen()  # as in a process that waited before
    reads = record_statements(producer, monkeypatch)
    with anyio.fail_after(10):
        outcomes = await asyncio.gather(
            *(producer.storage.wait(r.task_id, timeout=None, now=clock.time()) for r in sent)
        )
    assert [o.id for o in outcomes] == [r.task_id for r in sent]
    assert {o.status for o in outcomes} == {TaskStatus.DONE}
    assert reads == ["get_many"]


# -- the listening connection --------------------------------------------------------------------


class _Link:
    """One proxied connection: bytes flow both ways until it is silenced."""

    def __init__(self) -> None:
        self.silent = False
        self.writers: list[asyncio.StreamWriter] = []

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if not self.silent:  # silenced: dropped, and nothing is closed
                    writer.write(data)
                    await writer.drain()
        writer.close()


class _SilencingProxy:
    """A TCP proxy in front of PostgreSQL whose connections can be silenced one by one, as a dead
    host or a network partition looks to the client: no reply, no FIN, no RST."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.links: list[_Link] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        link = _Link()
        link.writers = [writer, up_writer]
        self.links.append(link)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(link.pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links:
            for writer in link.writers:
                writer.close()
        for task in list(self._tasks):
            task.cancel()


@pytest.mark.slow
async def test_a_listener_that_stops_answering_without_a_word_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_listener, "CHECK_EVERY_S", 0.2)
    monkeypatch.setattr(_listener, "ANSWER_WITHIN_S", 0.5)
    dsn, schema, clock = postgres_dsn(), random_schema(), FakeClock()
    parts = urlsplit(dsn)
    proxy = _SilencingProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await proxy.start()
    userinfo, at, _ = parts.netloc.rpartition("@")
    proxied = urlunsplit(parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{port}"))
    try:
        async with from_url(proxied, schema=schema) as ours, from_url(dsn, schema=schema) as other:
            [sent] = await ours.enqueue([message(ours)], now=clock.time())
            await ours.pg.listen()
            proxy.links[-1].silent = True  # the newest connection: the listening one
            got: list[TaskStatus] = []

            async def waiter() -> None:
                record = await ours.storage.wait(sent.task_id, timeout=None, now=clock.time())
                got.append(record.status)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(waiter)
                    await anyio.wait_all_tasks_blocked()
                    [delivery] = await claim(other, clock)
                    assert await other.complete([done(delivery, clock)], now=clock.time()) == [True]
            # The end's notification went to the silent connection; the listener noticed that
            # it no longer answers, reconnected, and read again what its waiters wait for.
            assert got == [TaskStatus.DONE]
    finally:
        await proxy.close()
        await drop_schema(dsn, schema)
