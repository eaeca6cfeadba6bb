"""A restarted PostgreSQL server: producers, workers and result waiters reconnect and carry on.

The test runs a private PostgreSQL (``initdb`` into a temporary directory, on a free loopback
port, trust authentication) so that it can stop and start it without disturbing the shared test
server; the server is stopped by its own pid. As root, the server runs as the ``postgres`` user
(PostgreSQL refuses to run as root).
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import asyncpg
import pytest

from taskflow.abc import TaskOutcome, TaskStatus
from taskflow.postgres import from_url
from taskflow.testing import FakeClock
from tests.conformance._helpers import claim, done, enqueue_one
from tests.services import PrivatePostgres, private_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def server() -> Iterator[PrivatePostgres]:
    with private_postgres() as srv:
        yield srv


@pytest.mark.timeout(180)  # longer than the default: a server stop, start and 60 s deadline
async def test_everything_carries_on_after_a_server_restart(server: PrivatePostgres) -> None:
    clock = FakeClock()
    async with (
        from_url(server.dsn, schema="jobs") as ours,
        from_url(server.dsn, schema="jobs") as worker,
    ):
        task_id = await enqueue_one(ours, clock)
        await ours.pg.listen()
        got: list[TaskOutcome] = []

        async def waiter() -> None:
            got.append(await ours.storage.wait(task_id, timeout=None, now=clock.time()))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                await anyio.to_thread.run_sync(server.stop)
                await anyio.to_thread.run_sync(server.start)
                # Pooled calls on both sides are retried until the server answers again.
                [delivery] = await claim(worker, clock)
                assert await worker.complete([done(delivery, clock)], now=clock.time()) == [True]
            second = await enqueue_one(ours, clock)
            [again] = await claim(worker, clock)
            assert again.task_id == second
        assert got[0].status is TaskStatus.DONE

    conn = await asyncpg.connect(server.dsn)
    try:
        assert await conn.fetchval('SELECT count(*) FROM "jobs_taskflow".tasks') == 2
    finally:
        await conn.close()
