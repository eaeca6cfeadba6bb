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
from taskflow.postgres._codec import MAX_LISTED_EVENTS
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


async def test_a_follower_misses_no_event_of_a_transaction_that_commits_late(
    broker: PostgresBroker, conn: asyncpg.Connection[asyncpg.Record], clock: FakeClock
) -> None:
    # An event's id is taken when it is inserted, but it is seen only when its transaction
    # commits: here the first one commits after a later one, while a follower reads on.
    early, late = message(broker), message(broker)
    transaction = conn.transaction()
    await transaction.start()
    await broker.enqueue([early], now=clock.time(), connection=conn)  # the lower event id
    await broker.enqueue([late], now=clock.time())  # a higher id, committed first
    seen = await broker.storage.read_events("default")  # the late one is held back, if read
    await transaction.commit()
    with anyio.fail_after(10):
        async for event in broker.storage.follow_events(
            "default", after=seen[-1].cursor if seen else None
        ):
            seen.append(event)
            if len(seen) == 2:
                break
    assert sorted(e.task_id for e in seen) == sorted([early.id, late.id])
    # Nothing comes twice: after the newest cursor there is nothing left to read.
    assert await broker.storage.read_events("default", after=seen[-1].cursor) == []


async def test_a_transaction_in_progress_holds_back_no_event_committed_after_it(
    broker: PostgresBroker, conn: asyncpg.Connection[asyncpg.Record], clock: FakeClock
) -> None:
    # An older transaction still in progress (here one that appends no event, so it notifies
    # nobody when it ends) does not hide what was committed meanwhile: a reader sees its own
    # writes at once, up to MAX_LISTED_EVENTS; the rest arrive once that transaction ended.
    transaction = conn.transaction()
    await transaction.start()
    await conn.fetchval("SELECT pg_current_xact_id()")  # holds the oldest transaction id
    msgs = [message(broker) for _ in range(MAX_LISTED_EVENTS + 1)]
    await broker.enqueue(msgs, now=clock.time())
    seen = await broker.storage.read_events("default", limit=2 * MAX_LISTED_EVENTS)
    assert [e.task_id for e in seen] == [m.id for m in msgs[:MAX_LISTED_EVENTS]]
    assert await broker.storage.read_events("default", after=seen[-1].cursor) == []
    follower = broker.storage.follow_events("default", after=seen[-1].cursor)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def follow() -> None:
                seen.append(await anext(follower))

            tg.start_soon(follow)
            await anyio.wait_all_tasks_blocked()
            await transaction.rollback()
    assert [e.task_id for e in seen] == [m.id for m in msgs]
    assert await broker.storage.read_events("default", after=seen[-1].cursor) == []


async def test_a_cursor_of_the_older_form_resumes_after_its_event(
    broker: PostgresBroker, clock: FakeClock
) -> None:
    # Cursors made before events recorded their transaction were the event's id alone.
    first, second = message(broker), message(broker)
    await broker.enqueue([first], now=clock.time())
    await broker.enqueue([second], now=clock.time())
    events = await broker.storage.read_events("default")
    old_form = events[0].cursor.rpartition(".")[2]
    assert [e.task_id for e in await broker.storage.read_events("default", after=old_form)] == [
        second.id
    ]
