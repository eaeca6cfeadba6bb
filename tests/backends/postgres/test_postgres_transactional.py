"""Transactional enqueue on PostgreSQL (the outbox pattern): a task enqueued with the caller's
asyncpg connection exists, and wakes workers, only if the caller's transaction commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from taskflow import BackendUnavailable, QueueTasks
from taskflow.abc import TaskStatus
from taskflow.postgres import PostgresBroker
from taskflow.testing import FakeClock
from tests.conformance._helpers import claim, message
from tests.plugins.backend_postgres import drop_schema, postgres_factory, random_schema
from tests.services import postgres_dsn

pytestmark = pytest.mark.postgres


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def broker() -> AsyncIterator[PostgresBroker]:
    async with postgres_factory(postgres_dsn())() as b:
        yield b


@pytest.fixture
async def conn() -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """The application's own connection, on which it runs its own transactions."""
    connection = await asyncpg.connect(postgres_dsn())
    try:
        yield connection
    finally:
        await connection.close()


async def test_rolled_back_transaction_leaves_no_task(
    broker: PostgresBroker, conn: asyncpg.Connection[asyncpg.Record], clock: FakeClock
) -> None:
    msg = message(broker)
    transaction = conn.transaction()
    await transaction.start()
    [result] = await broker.enqueue([msg], now=clock.time(), connection=conn)
    assert result.created and result.task_id == msg.id
    await conn.execute("SELECT 1")  # the application's own work in the same transaction
    await transaction.rollback()

    assert await broker.storage.get(msg.id, now=clock.time()) is None
    assert await claim(broker, clock) == []
    assert await broker.storage.read_events("default") == []


async def test_committed_transaction_makes_the_task_visible_and_claimable(
    broker: PostgresBroker, conn: asyncpg.Connection[asyncpg.Record], clock: FakeClock
) -> None:
    msg = message(broker)
    async with conn.transaction():
        await broker.enqueue([msg], now=clock.time(), connection=conn)
        # Not committed yet: invisible to everyone else.
        assert await broker.storage.get(msg.id, now=clock.time()) is None
        assert await claim(broker, clock) == []

    record = await broker.storage.get(msg.id, now=clock.time())
    assert record is not None and record.status is TaskStatus.QUEUED
    [delivery] = await claim(broker, clock)
    assert delivery.task_id == msg.id


async def test_commit_wakes_an_idle_worker(
    broker: PostgresBroker, conn: asyncpg.Connection[asyncpg.Record], clock: FakeClock
) -> None:
    """The NOTIFY sent inside the caller's transaction is delivered on commit, not before."""
    woke = anyio.Event()
    broker.watch_work(["default"], worker_id="w1", callback=woke.set)
    assert await claim(broker, clock, worker_id="w1") == []
    await broker.next_due(["default"], now=clock.time())
    with anyio.fail_after(10):
        async with conn.transaction():
            await broker.enqueue([message(broker)], now=clock.time(), connection=conn)
            await anyio.wait_all_tasks_blocked()
            assert not woke.is_set()
        await woke.wait()
    assert len(await claim(broker, clock, worker_id="w1")) == 1
    await broker.unwatch_work(["default"], worker_id="w1", now=clock.time())


async def test_dedup_applies_inside_the_transaction(
    broker: PostgresBroker, conn: asyncpg.Connection[asyncpg.Record], clock: FakeClock
) -> None:
    live = message(broker, dedup_key="order-7")
    [first] = await broker.enqueue([live], now=clock.time())
    async with conn.transaction():
        [again] = await broker.enqueue(
            [message(broker, dedup_key="order-7")], now=clock.time(), connection=conn
        )
    assert first.created and not again.created and again.task_id == live.id


async def test_something_that_is_not_a_connection_is_refused(
    broker: PostgresBroker, clock: FakeClock
) -> None:
    with pytest.raises(BackendUnavailable, match="asyncpg connection"):
        await broker.enqueue([message(broker)], now=clock.time(), connection=object())


async def test_task_options_connection_end_to_end(
    conn: asyncpg.Connection[asyncpg.Record],
) -> None:
    """`task.options(connection=conn).add_task(...)`: rolled back, nothing; committed, it runs."""
    schema = random_schema()
    app = QueueTasks("outbox", broker=f"{postgres_dsn()}?schema={schema}")

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    try:
        with anyio.fail_after(20):
            async with app.running():
                transaction = conn.transaction()
                await transaction.start()
                dropped = await double.options(connection=conn).add_task(1)
                await transaction.rollback()
                async with conn.transaction():
                    kept = await double.options(connection=conn).add_task(21)
                assert await kept.result(timeout=10) == 42
                assert await app.get(dropped.task_id) is None
    finally:
        await drop_schema(postgres_dsn(), schema)
