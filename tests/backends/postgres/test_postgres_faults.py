"""PostgreSQL under faults: a claim whose reply is lost in transit (issue 14, D2).

The server commits a claim, and the connection drops before the worker reads the reply: the
tasks it took are handed to nobody. They must not wait out a lease, nor lose an attempt (with
``retries=0``, nor be dead-lettered as ``LeaseExpired`` without ever running): the broker gives
back the tasks of a claim that raised (they carry its claim id) before it claims again.

The loss is made two ways: deterministically, by `ReplyLosingProxy` (``pg_proxy.py`` beside
this file), which lets the server finish the claim statement and then cuts the connection
before the client reads a byte of its reply; and statistically, by ``pg_terminate_backend`` of
the worker's sessions in a loop while it runs a few hundred tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from taskflow import GlobalConfig, QueueTasks, TaskFailed, TaskFunc, Worker
from taskflow.abc import CancelResult, EventKind, TaskStatus
from taskflow.postgres import PostgresBroker, from_url
from taskflow.testing import FakeClock
from tests.backends.postgres.pg_proxy import ReplyLosingProxy, reply_losing_proxy
from tests.conformance._helpers import claim, done, enqueue_one
from tests.plugins.backend_postgres import drop_schema, random_schema
from tests.services import postgres_dsn

pytestmark = pytest.mark.postgres

#: A piece of the claim statement's text (it travels in the statement's Parse message).
_CLAIM_MARKER = b"AS verdict"
#: Far longer than any test here: a task that waited for its lease would time the test out.
_LONG_LEASE_S = 120.0


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A schema base of this test's own; every app schema on it is dropped afterwards."""
    name = random_schema()
    try:
        yield name
    finally:
        await drop_schema(postgres_dsn(), name)


@pytest.fixture
async def proxy() -> AsyncIterator[ReplyLosingProxy]:
    async with reply_losing_proxy(postgres_dsn()) as started:
        yield started


async def test_a_claim_whose_reply_is_lost_is_given_back_and_claimed_again(
    schema: str, proxy: ReplyLosingProxy
) -> None:
    clock = FakeClock()
    async with (
        from_url(proxy.dsn(), schema=schema) as ours,
        from_url(postgres_dsn(), schema=schema) as producer,
    ):
        assert _CLAIM_MARKER.decode() in ours.sql.claim
        ids = [await enqueue_one(producer, clock) for _ in range(3)]
        await ours.pg.listen()  # its listener's connection is not the one to cut
        lost = proxy.lose_reply_of(_CLAIM_MARKER)

        # The retried claim statement gives the lost claim's tasks back (the worker's next
        # claim takes them: a notification wakes it if it went idle).
        assert await claim(ours, clock, lease_s=_LONG_LEASE_S) == []
        assert lost.is_set() and proxy.cuts == 1
        deliveries = await claim(ours, clock, lease_s=_LONG_LEASE_S)

        # Each on its first attempt again, due at once (no lease waited for).
        assert sorted(d.task_id for d in deliveries) == sorted(ids)
        assert {d.attempt for d in deliveries} == {1}
        outcomes = [done(d, clock) for d in deliveries]
        assert await ours.complete(outcomes, now=clock.time()) == [True] * 3
        events = await producer.storage.read_events("default")
        kinds = [e.kind for e in events if e.task_id == ids[0]]
        assert kinds == [
            EventKind.QUEUED,
            EventKind.RUNNING,
            EventKind.RELEASED,
            EventKind.RUNNING,
            EventKind.DONE,
        ]
        released = next(e for e in events if e.kind is EventKind.RELEASED)
        assert released.attempt == 0 and released.detail == "claim reply lost"


async def test_a_claim_cancelled_after_the_server_committed_it_is_given_back_on_close(
    schema: str, proxy: ReplyLosingProxy
) -> None:
    """A stop can cancel a claim in flight; the server may have committed it. The broker gives
    it back when it closes, rather than leave its tasks to their lease."""
    clock = FakeClock()
    async with from_url(postgres_dsn(), schema=schema) as producer:
        task_id = await enqueue_one(producer, clock)
        ours = from_url(proxy.dsn(), schema=schema)
        await ours.open()
        await ours.pg.listen()
        committed = proxy.lose_reply_of(_CLAIM_MARKER, cut=False)
        claiming = asyncio.ensure_future(claim(ours, clock, lease_s=_LONG_LEASE_S))
        with anyio.fail_after(10):
            await committed.wait()
        claiming.cancel()
        proxy.cut_held()  # asyncpg waits for the cancelled statement's end, held back here
        with anyio.fail_after(10), pytest.raises(asyncio.CancelledError):
            await claiming
        with anyio.fail_after(20):
            await ours.close()
        record = await producer.storage.get(task_id, now=clock.time())
        assert record is not None
        assert (record.status, record.attempts) == (TaskStatus.QUEUED, 0)


async def test_giving_back_a_claim_twice_changes_nothing_the_second_time(schema: str) -> None:
    """The give-back touches only rows still running under the claim's id, so a give-back
    repeated (a retried call) leaves what the first one did, and what came after it, alone."""
    clock = FakeClock()
    async with from_url(postgres_dsn(), schema=schema) as broker:
        task_id = await enqueue_one(broker, clock)
        await claim(broker, clock, lease_s=_LONG_LEASE_S)
        conn = await asyncpg.connect(postgres_dsn())
        try:
            claimed = await _row(conn, broker, task_id)
            assert claimed["status"] == "running" and claimed["claim_id"] is not None

            async def give_back() -> None:
                args = (["default"], [claimed["claim_id"]], clock.time(), broker.pg.channel)
                await conn.fetchrow(broker.sql.give_back, *args)

            await give_back()
            given_back = await _row(conn, broker, task_id)
            assert given_back["status"] == "queued" and given_back["attempts"] == 0
            await give_back()
            assert await _row(conn, broker, task_id) == given_back
            [again] = await claim(broker, clock, lease_s=_LONG_LEASE_S)
            await give_back()  # the new claim has an id of its own: it keeps its task
            assert (await _row(conn, broker, task_id))["status"] == "running"
            assert again.attempt == 1
            assert await broker.complete([done(again, clock)], now=clock.time()) == [True]
        finally:
            await conn.close()


async def test_a_lost_claims_task_whose_cancel_was_requested_is_cancelled_not_requeued(
    schema: str,
) -> None:
    clock = FakeClock()
    async with from_url(postgres_dsn(), schema=schema) as broker:
        task_id = await enqueue_one(broker, clock)
        await claim(broker, clock, lease_s=_LONG_LEASE_S)
        assert await broker.cancel([task_id], now=clock.time()) == [CancelResult.REQUESTED]
        conn = await asyncpg.connect(postgres_dsn())
        try:
            claimed = await _row(conn, broker, task_id)
            args = (["default"], [claimed["claim_id"]], clock.time(), broker.pg.channel)
            await conn.fetchrow(broker.sql.give_back, *args)
            given_back = await _row(conn, broker, task_id)
        finally:
            await conn.close()
        # Its lease lapsed now: the next claim cancels it (as it would after the lease).
        assert given_back["status"] == "running" and given_back["due_at"] == clock.time()
        assert await claim(broker, clock) == []
        record = await broker.storage.get(task_id, now=clock.time())
        assert record is not None and record.status is TaskStatus.CANCELLED


async def _row(
    conn: asyncpg.Connection[asyncpg.Record], broker: PostgresBroker, task_id: str
) -> dict[str, object]:
    row = await conn.fetchrow(
        f'SELECT status, attempts, token, claim_id, due_at FROM "{broker.pg.schema}".tasks'
        " WHERE id = $1",
        task_id,
    )
    assert row is not None
    return dict(row)


def _count_runs(app: QueueTasks, runs: Counter[int]) -> TaskFunc[[int], int]:
    """Register the tests' task on `app`: it counts its runs by argument in `runs`."""

    @app.task(name="work", retries=0)
    async def work(i: int) -> int:
        runs[i] += 1
        return i

    return work


async def test_a_worker_whose_claim_reply_is_lost_runs_the_task_at_once_with_no_retry_left(
    schema: str, proxy: ReplyLosingProxy
) -> None:
    """retries=0 and a long lease: before the give-back, the task waited the lease and then
    failed with LeaseExpired without running."""
    runs: Counter[int] = Counter()
    config = GlobalConfig(lease_s=_LONG_LEASE_S)
    producer = QueueTasks("lost", broker=f"{postgres_dsn()}?schema={schema}", config=config)
    worker_app = QueueTasks("lost", broker=f"{proxy.dsn()}&schema={schema}", config=config)
    work = _count_runs(producer, runs)
    _count_runs(worker_app, runs)
    async with producer, worker_app:
        handles = [await work.add_task(i) for i in range(3)]
        proxy.lose_reply_of(_CLAIM_MARKER)
        async with anyio.create_task_group() as tg:
            worker = Worker(worker_app, concurrency=4)
            await tg.start(worker.run)
            with anyio.fail_after(20):
                assert [await h.result(timeout=15) for h in handles] == [0, 1, 2]
            worker.stop()
        assert proxy.cuts == 1
        assert runs == Counter({0: 1, 1: 1, 2: 1})
        for handle in handles:
            info = await handle.info()
            assert info.status is TaskStatus.DONE and info.attempts == 1


#: The statistical run: tasks, and the pause between two rounds of terminations.
_KILL_RUN_TASKS = int(os.environ.get("TASKFLOW_KILL_RUN_TASKS", "400"))
_KILL_EVERY_S = 0.05
#: Short, so a claim lost before the fix fails its task within the run (LeaseExpired).
_KILL_RUN_LEASE_S = 10.0


@pytest.mark.slow
async def test_terminated_sessions_never_dead_letter_a_task_that_did_not_run(schema: str) -> None:
    """The fault of the report: the worker's sessions terminated in a loop while it runs a few
    hundred short tasks with retries=0. Every task runs once and ends done; none fails with
    LeaseExpired."""
    runs: Counter[int] = Counter()
    config = GlobalConfig(lease_s=_KILL_RUN_LEASE_S, claim_batch=4)
    url = f"{postgres_dsn()}?schema={schema}"
    producer = QueueTasks("kills", broker=url, config=config)
    # One name per run, so that two runs on one server (helpers, parallel CI jobs) never
    # terminate each other's sessions.
    victim = f"taskflow-victim-{schema}"
    worker_app = QueueTasks("kills", broker=f"{url}&application_name={victim}", config=config)
    work = _count_runs(producer, runs)
    _count_runs(worker_app, runs)
    killed = 0

    async def terminate_in_a_loop() -> None:
        nonlocal killed
        admin = await asyncpg.connect(postgres_dsn())
        try:
            while True:
                killed += await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = $1",
                    victim,
                )
                await asyncio.sleep(_KILL_EVERY_S)
        finally:
            await admin.close()

    async with producer, worker_app:
        handles = await producer.add_tasks([work.prepare(i) for i in range(_KILL_RUN_TASKS)])
        async with anyio.create_task_group() as tg:
            worker = Worker(worker_app, concurrency=20)
            await tg.start(worker.run)
            tg.start_soon(terminate_in_a_loop)
            with anyio.fail_after(120):
                for handle in handles:
                    with contextlib.suppress(TaskFailed):
                        await handle.result(timeout=100)
            tg.cancel_scope.cancel()
        infos = [await h.info() for h in handles]
    failed = Counter(i.error and i.error.type for i in infos if i.status is not TaskStatus.DONE)
    assert killed > 0
    assert not failed, f"{sum(failed.values())} of {_KILL_RUN_TASKS} not done: {failed}"
    assert runs == Counter(dict.fromkeys(range(_KILL_RUN_TASKS), 1))
