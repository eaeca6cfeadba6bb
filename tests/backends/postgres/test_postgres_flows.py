"""Flows on PostgreSQL under concurrency: the row locks that make a task's end and its links'
effects one step hold when several connections end linked tasks at once.

The semantics are the conformance suite's (tests/conformance/test_flows.py); this file checks
what only a shared server can get wrong: two transactions each counting one parent of the same
join (neither may miss the other's count, so the join becomes claimable exactly once), a hedge
copy enqueued while its primary completes, and that a plain task's row never enters the flow
triggers' work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from taskflow.abc import Broker, Outcome, TaskMessage, TaskStatus
from taskflow.postgres import PostgresBroker, from_url
from taskflow.testing import FakeClock
from tests.conformance._helpers import claim, done, message
from tests.plugins.backend_postgres import drop_schema, random_schema
from tests.services import postgres_dsn

pytestmark = pytest.mark.postgres

SHARDS = 60


@pytest.fixture
async def brokers() -> AsyncIterator[tuple[PostgresBroker, PostgresBroker]]:
    """Two brokers (two pools) on one fresh schema, as two worker processes would have."""
    schema = random_schema()
    try:
        async with (
            from_url(postgres_dsn(), schema=schema, max_pool_size=8) as one,
            from_url(postgres_dsn(), schema=schema, max_pool_size=8) as two,
        ):
            yield one, two
    finally:
        await drop_schema(postgres_dsn(), schema)


def fan_in(broker: Broker, shards: int) -> tuple[list[TaskMessage], str]:
    """`shards` tasks and a join waiting for all of them; the messages and the join's id."""
    join = broker.new_task_id("default")
    ids = [broker.new_task_id("shards") for _ in range(shards)]
    messages = [
        message(broker, "shards", id=i, flow_id="f", children=[(join, "default")]) for i in ids
    ]
    messages.append(message(broker, id=join, flow_id="f", waits_for=ids))
    return messages, join


async def complete_as(broker: Broker, outcomes: list[Outcome], now: float) -> None:
    await broker.complete(outcomes, now=now)


async def enqueue_as(broker: Broker, messages: list[TaskMessage], now: float) -> None:
    await broker.enqueue(messages, now=now)


async def test_shards_ended_at_once_on_many_connections_release_their_join_once(
    brokers: tuple[PostgresBroker, PostgresBroker],
) -> None:
    one, two = brokers
    clock = FakeClock()
    messages, join = fan_in(one, SHARDS)
    await one.enqueue(messages, now=clock.time())
    deliveries = await claim(one, clock, ("shards",), limit=SHARDS)
    assert len(deliveries) == SHARDS

    accepted: list[bool] = []

    async def end(broker: Broker, index: int) -> None:
        accepted.extend(await broker.complete([done(deliveries[index], clock)], now=clock.time()))

    async with anyio.create_task_group() as tg:  # one statement per shard, all at once
        for index in range(SHARDS):
            tg.start_soon(end, (one, two)[index % 2], index)

    assert accepted == [True] * SHARDS
    record = await one.storage.get(join, now=clock.time())
    assert record is not None and record.status is TaskStatus.QUEUED
    ready = [e for e in await one.storage.read_events("default") if e.detail == "ready"]
    assert [e.task_id for e in ready] == [join]
    [delivery] = await claim(two, clock)
    assert delivery.task_id == join


async def test_a_copy_enqueued_while_its_primary_completes_has_one_outcome(
    brokers: tuple[PostgresBroker, PostgresBroker],
) -> None:
    """Whichever commits first, the copy ends up superseded (cancelled) and the primary keeps
    its own outcome: no copy is left queued beside an ended primary."""
    one, two = brokers
    clock = FakeClock()
    for _ in range(10):
        primary = message(one, flow_id="f")
        await one.enqueue([primary], now=clock.time())
        [delivery] = await claim(one, clock)
        copy = message(two, flow_id="f", outcome_to=primary.id, copy=True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(complete_as, one, [done(delivery, clock, "primary")], clock.time())
            tg.start_soon(enqueue_as, two, [copy], clock.time())

        records = await one.storage.get_many([primary.id, copy.id], now=clock.time())
        assert [r.status if r else None for r in records] == [
            TaskStatus.DONE,
            TaskStatus.CANCELLED,
        ]
        assert await claim(one, clock) == []


async def test_a_plain_task_is_stored_without_links(
    brokers: tuple[PostgresBroker, PostgresBroker],
) -> None:
    """The triggers' WHEN clauses keep a row out while it is not linked: a plain task's row
    stays unlinked, with no parent rows, through its whole life."""
    one, _ = brokers
    clock = FakeClock()
    plain = message(one)
    await one.enqueue([plain], now=clock.time())
    [delivery] = await claim(one, clock)
    assert await one.complete([done(delivery, clock)], now=clock.time()) == [True]
    conn = await asyncpg.connect(postgres_dsn())
    try:
        row = await conn.fetchrow(
            f'SELECT flow_links, waits_for, children FROM "{one.pg.schema}".tasks WHERE id = $1',
            plain.id,
        )
        edges = await conn.fetchval(f'SELECT count(*) FROM "{one.pg.schema}".flow_waits')
    finally:
        await conn.close()
    assert row is not None
    assert (row["flow_links"], row["waits_for"], row["children"], edges) == (False, None, None, 0)
