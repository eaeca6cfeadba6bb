"""Crash test on PostgreSQL with real processes: a ``taskflow worker`` process is SIGKILLed three
times while it runs tasks; a fresh worker takes over each time. Every task must end DONE with
exactly one terminal outcome (one DONE event), none lost, and the tasks the killed workers held
must have been re-delivered after their leases lapsed.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import asyncpg
import pytest

from taskflow import QueueTasks
from taskflow.postgres import PostgresBroker
from tests.plugins.backend_postgres import drop_schema, random_schema
from tests.services import postgres_dsn, stop_process

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TASKS = 400
KILLS = 3
#: Tasks that must finish between two kills, so each kill lands mid-run.
PROGRESS_PER_ROUND = 40

_APP_MODULE = """
import asyncio
import os

from taskflow import GlobalConfig, QueueTasks

app = QueueTasks(
    "crash",
    broker=os.environ["TASKFLOW_CRASH_BROKER"],
    config=GlobalConfig(lease_s=2, heartbeat_s=0.5, concurrency=20),
)


@app.task(retries=10)
async def work(i: int) -> int:
    await asyncio.sleep(0.02)
    return i * 2
"""


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = random_schema()
    try:
        yield name
    finally:
        await drop_schema(postgres_dsn(), name)


@pytest.fixture
def app_module(
    tmp_path: Path, schema: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, str]]:
    """Write the worker's app module; return its module name and the workers' environment."""
    name = f"crash_app_{schema}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(_APP_MODULE))
    url = f"{postgres_dsn()}{'&' if '?' in postgres_dsn() else '?'}schema={schema}"
    monkeypatch.setenv("TASKFLOW_CRASH_BROKER", url)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    return name, env


def start_worker(module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "taskflow", "worker", f"{module}:app", "--concurrency", "20"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def counts(conn: asyncpg.Connection[asyncpg.Record], schema: str) -> tuple[int, int]:
    """(done, running under a live lease) tasks right now; the workers use the real clock."""
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 'done') AS done,"
        " count(*) FILTER (WHERE status = 'running'"
        "   AND due_at > extract(epoch FROM clock_timestamp())) AS running"
        f' FROM "{schema}".tasks'
    )
    assert row is not None
    return row["done"], row["running"]


async def wait_until(
    conn: asyncpg.Connection[asyncpg.Record], schema: str, done_at_least: int, running: bool
) -> int:
    """Poll the database until `done_at_least` tasks are done (and, if `running`, some are in
    flight); return how many are in flight. Another process does the work: there is no event
    in this process to wait on."""
    while True:
        done, in_flight = await counts(conn, schema)
        if done >= done_at_least and (in_flight > 0 or not running):
            return in_flight
        await anyio.sleep(0.02)


@pytest.mark.timeout(240)  # longer than the default: its own deadline is 180 s
async def test_sigkilled_workers_lose_nothing_and_end_each_task_once(
    app_module: tuple[str, dict[str, str]], schema: str
) -> None:
    module_name, env = app_module
    module = importlib.import_module(module_name)
    app: QueueTasks = module.app
    assert isinstance(app.broker, PostgresBroker)
    schema = app.broker.pg.schema  # the app's own: <base>_crash
    started = time.monotonic()
    conn = await asyncpg.connect(postgres_dsn())
    procs: list[subprocess.Popen[bytes]] = []
    in_flight: list[int] = []
    try:
        async with app:
            handles = await app.add_tasks([module.work.prepare(i) for i in range(TASKS)])
            with anyio.fail_after(180):
                for round_ in range(1, KILLS + 1):
                    proc = start_worker(module_name, env)
                    procs.append(proc)
                    in_flight.append(
                        await wait_until(conn, schema, round_ * PROGRESS_PER_ROUND, running=True)
                    )
                    proc.kill()  # SIGKILL: no graceful shutdown, its leases are left to lapse
                    proc.wait()
                final = start_worker(module_name, env)
                procs.append(final)
                await wait_until(conn, schema, TASKS, running=False)
                values = [await h.result(timeout=10) for h in handles]
        stop_process(final)
        rows = await conn.fetch(f'SELECT id, status, attempts FROM "{schema}".tasks')
        terminal_events = await conn.fetch(
            f'SELECT task_id, count(*) AS n FROM "{schema}".events'
            " WHERE kind IN ('done', 'failed', 'cancelled', 'expired') GROUP BY task_id"
        )
    finally:
        for proc in procs:
            stop_process(proc)
        await conn.close()

    assert values == [i * 2 for i in range(TASKS)]
    assert len(rows) == TASKS
    assert {row["status"] for row in rows} == {"done"}
    assert {row["task_id"]: row["n"] for row in terminal_events} == {h.task_id: 1 for h in handles}
    redelivered = sum(1 for row in rows if row["attempts"] > 1)
    assert all(n > 0 for n in in_flight) and redelivered > 0
    print(
        f"\ncrash test: {TASKS} tasks, {KILLS} SIGKILLs (live leases at each kill: {in_flight}), "
        f"{redelivered} re-delivered, "
        f"each done exactly once, none lost, {time.monotonic() - started:.1f}s"
    )
