"""PostgreSQL-specific behaviour the conformance suite does not see: notifications of a large
batch split across payloads (PostgreSQL caps one at 8000 bytes) still reach another process's
waiters, channel names per schema, and sessions named after their schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from taskflow.abc import TaskOutcome, TaskStatus
from taskflow.postgres import PostgresBroker, channel_name, from_url
from taskflow.testing import FakeClock
from tests.conformance._helpers import claim, done, message
from tests.plugins.backend_postgres import drop_schema, random_schema
from tests.services import postgres_dsn

pytestmark = pytest.mark.postgres


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[PostgresBroker, PostgresBroker]]:
    """Two brokers on one fresh schema, as two processes would have."""
    dsn, schema = postgres_dsn(), random_schema()
    try:
        async with from_url(dsn, schema=schema) as first, from_url(dsn, schema=schema) as second:
            yield first, second
    finally:
        await drop_schema(dsn, schema)


async def test_a_large_batch_wakes_waiters_in_another_process(
    pair: tuple[PostgresBroker, PostgresBroker], clock: FakeClock
) -> None:
    producer, worker = pair
    results = await producer.enqueue([message(producer) for _ in range(800)], now=clock.time())
    ids = [r.task_id for r in results]
    watched = [ids[0], ids[399], ids[-1]]  # spread over the split notification payloads
    got: list[TaskOutcome] = []

    async def waiter(task_id: str) -> None:
        got.append(await producer.storage.wait(task_id, timeout=None, now=clock.time()))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for task_id in watched:
                tg.start_soon(waiter, task_id)
            await anyio.wait_all_tasks_blocked()
            deliveries = await claim(worker, clock, limit=1000)
            assert len(deliveries) == 800
            accepted = await worker.complete([done(d, clock) for d in deliveries], now=clock.time())
            assert all(accepted)
    assert sorted(r.id for r in got) == sorted(watched)
    assert {r.status for r in got} == {TaskStatus.DONE}


def test_channels_are_named_after_the_schema() -> None:
    assert channel_name("jobs") == "taskflow_jobs"
    assert channel_name("jobs") != channel_name("mail")
    long_a, long_b = "a" * 63, "a" * 62 + "b"
    assert len(channel_name(long_a)) <= 63
    assert channel_name(long_a) != channel_name(long_b)


async def test_sessions_are_named_after_the_schema(
    pair: tuple[PostgresBroker, PostgresBroker],
) -> None:
    broker, _ = pair
    await broker.pg.listen()
    conn = await asyncpg.connect(postgres_dsn())
    try:
        names = await conn.fetch(
            "SELECT query FROM pg_stat_activity WHERE application_name = $1",
            broker.pg.application_name,
        )
    finally:
        await conn.close()
    assert broker.pg.application_name == f"taskflow/{broker.pg.schema}"
    # The pool's connections and the LISTEN connection (of both brokers: same schema).
    assert any(row["query"].startswith("LISTEN") for row in names)
    assert len(names) >= 2
