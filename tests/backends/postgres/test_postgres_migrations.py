"""The PostgreSQL schema: versioned migrations under an advisory lock, applied once even when
several processes start at once, and an older schema upgraded in place with its data kept. Also
the module's entry points: `from_url` options and the message when asyncpg is missing.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from taskflow import ConfigError, QueueTasks
from taskflow.abc import TaskMessage, TaskStatus, encode_message
from taskflow.postgres import PostgresBroker, from_url, upgrade
from taskflow.postgres._schema import LATEST_VERSION, MIGRATIONS, migrate
from taskflow.testing import FakeClock
from tests.conformance._helpers import PAYLOAD, claim, done, enqueue_one
from tests.plugins.backend_postgres import drop_schema, random_schema
from tests.services import postgres_dsn

pytestmark = pytest.mark.postgres

_UPGRADE_SCRIPT = """
import asyncio, sys
from taskflow.postgres import upgrade
print(asyncio.run(upgrade(sys.argv[1], sys.argv[2])))
"""


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A schema name of this test's own; dropped afterwards."""
    name = random_schema()
    try:
        yield name
    finally:
        await drop_schema(postgres_dsn(), name)


def _tables(schema: str, app: str = "taskflow") -> str:
    """The schema of app `app`'s tables on base `schema`."""
    return f"{schema}_{app}"


async def _applied_versions(schema: str) -> list[int]:
    conn = await asyncpg.connect(postgres_dsn())
    try:
        rows = await conn.fetch(
            f'SELECT version FROM "{_tables(schema)}".schema_version ORDER BY version'
        )
        return [row["version"] for row in rows]
    finally:
        await conn.close()


async def _index_names(schema: str) -> set[str]:
    conn = await asyncpg.connect(postgres_dsn())
    try:
        rows = await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1", _tables(schema)
        )
        return {row["indexname"] for row in rows}
    finally:
        await conn.close()


@pytest.mark.timeout(120)  # longer than the default: its processes' deadline is 60 s
async def test_concurrent_upgrades_from_several_processes_apply_each_migration_once(
    schema: str,
) -> None:
    dsn = postgres_dsn()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _UPGRADE_SCRIPT, dsn, schema],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == str(LATEST_VERSION)
    assert await _applied_versions(schema) == [number for number, _, _ in MIGRATIONS]


async def test_upgrade_is_idempotent(schema: str) -> None:
    assert await upgrade(postgres_dsn(), schema) == LATEST_VERSION
    assert await upgrade(postgres_dsn(), schema) == LATEST_VERSION
    assert await _applied_versions(schema) == [number for number, _, _ in MIGRATIONS]


async def test_an_older_schema_is_upgraded_in_place_keeping_its_tasks(schema: str) -> None:
    clock = FakeClock()
    assert await upgrade(postgres_dsn(), schema, target=1) == 1
    assert "tasks_claim" not in await _index_names(schema)
    # A version-1 deployment with a task in flight (written with version-1 columns only).
    conn = await asyncpg.connect(postgres_dsn())
    try:
        await conn.execute(
            f'INSERT INTO "{_tables(schema)}".tasks'
            " (id, name, queue, status, due_at, data, created_at)"
            " VALUES ('old-1', 'tests.task', 'default', 'queued', $1, $2, $1)",
            clock.time(),
            encode_message(
                TaskMessage(id="old-1", name="tests.task", queue="default", payload=PAYLOAD)
            ),
        )
    finally:
        await conn.close()

    broker = from_url(postgres_dsn(), schema=schema)
    async with broker:  # opening migrates to the latest version
        assert await _applied_versions(schema) == [number for number, _, _ in MIGRATIONS]
        assert {"tasks_claim", "tasks_due", "tasks_dedup_live"} <= await _index_names(schema)
        record = await broker.storage.get("old-1", now=clock.time())
        assert record is not None and record.status is TaskStatus.QUEUED
        new_id = await enqueue_one(broker, clock)
        claimed = [d.task_id for d in await claim(broker, clock)]
        assert claimed == ["old-1", new_id]


async def test_tasks_stored_before_flows_read_and_run_as_plain_tasks(schema: str) -> None:
    """Migration 12 adds the flow columns: a task and its event stored at version 11 read with
    no flow field, and the task runs to its end (its row never enters the flow triggers)."""
    clock = FakeClock()
    assert await upgrade(postgres_dsn(), schema, target=11) == 11
    conn = await asyncpg.connect(postgres_dsn())
    try:
        await conn.execute(
            f'INSERT INTO "{_tables(schema)}".tasks'
            " (id, name, queue, status, due_at, data, created_at)"
            " VALUES ('old-1', 'tests.task', 'default', 'queued', $1, $2, $1)",
            clock.time(),
            encode_message(
                TaskMessage(id="old-1", name="tests.task", queue="default", payload=PAYLOAD)
            ),
        )
        await conn.execute(
            f'INSERT INTO "{_tables(schema)}".events (queue, task_id, kind, at, name) '
            "VALUES ('default', 'old-1', 'queued', $1, 'tests.task')",
            clock.time(),
        )
    finally:
        await conn.close()
    async with from_url(postgres_dsn(), schema=schema) as broker:  # migrates to 12
        record = await broker.storage.get("old-1", now=clock.time())
        assert record is not None
        assert (record.flow_id, record.node, record.waits_for, record.outcome_to, record.copy) == (
            None,
            None,
            [],
            None,
            False,
        )
        [delivery] = await claim(broker, clock)
        assert await broker.complete([done(delivery, clock)], now=clock.time()) == [True]
        events = await broker.storage.read_events("default")
        assert [(e.kind.value, e.flow_id) for e in events] == [
            ("queued", None),
            ("running", None),
            ("done", None),
        ]
        [stats] = await broker.stats(["default"], now=clock.time())
        assert (stats.waiting, stats.queued) == (0, 0)


async def test_events_stored_before_they_named_their_task_read_with_no_name(schema: str) -> None:
    clock = FakeClock()
    assert await upgrade(postgres_dsn(), schema, target=3) == 3
    conn = await asyncpg.connect(postgres_dsn())
    try:
        await conn.execute(
            f'INSERT INTO "{_tables(schema)}".events (queue, task_id, kind, at) '
            "VALUES ('default', 'old-1', 'queued', $1)",
            clock.time(),
        )
    finally:
        await conn.close()
    async with from_url(postgres_dsn(), schema=schema) as broker:
        new_id = await enqueue_one(broker, clock)
        events = await broker.storage.read_events("default")
    assert [(e.task_id, e.name) for e in events] == [("old-1", ""), (new_id, "tests.task")]


async def test_a_schema_of_the_layout_before_app_schemas_is_taken_over_by_renaming_it(
    schema: str,
) -> None:
    """The upgrade path the PostgreSQL page gives: the tables of a version that kept them in
    `<schema>` itself, renamed to `<schema>_<app>`, are the app's, tasks and all."""
    clock = FakeClock()
    conn = await asyncpg.connect(postgres_dsn())
    try:
        await migrate(conn, schema)  # where the previous version kept its tables
        await conn.execute(
            f'INSERT INTO "{schema}".tasks (id, name, queue, status, due_at, data, created_at)'
            " VALUES ('4198aea3538284d61', 'tests.task', 'default', 'queued', $1, $2, $1)",
            clock.time(),
            encode_message(
                TaskMessage(
                    id="4198aea3538284d61", name="tests.task", queue="default", payload=PAYLOAD
                )
            ),
        )
        await conn.execute(f'ALTER SCHEMA "{schema}" RENAME TO "{_tables(schema, "shop")}"')
    finally:
        await conn.close()
    async with from_url(postgres_dsn(), schema=schema, app="shop") as broker:
        [delivery] = await claim(broker, clock)
        assert delivery.task_id == "4198aea3538284d61"
        assert await broker.complete([done(delivery, clock)], now=clock.time()) == [True]


async def test_the_schema_is_the_base_from_the_url_or_the_option_and_the_app(
    schema: str,
) -> None:
    broker = from_url(f"{postgres_dsn()}?schema={schema}")
    assert broker.pg.schema == _tables(schema)
    async with broker:
        assert await _applied_versions(schema) == [number for number, _, _ in MIGRATIONS]
    assert from_url(postgres_dsn(), schema="other").pg.schema == "other_taskflow"
    assert from_url("postgres://u:p@h/db", app="shop-api").pg.schema == "taskflow_shop-api"
    assert from_url("postgres://u:p@h/db?schema=jobs", app="shop").pg.schema == "jobs_shop"


def test_an_app_built_from_a_url_has_its_own_schema_and_a_broker_object_keeps_its_own() -> None:
    app = QueueTasks("billing", broker="postgresql://u:p@h/db?schema=jobs")
    assert isinstance(app.broker, PostgresBroker)
    assert (app.broker.pg.schema, app.broker.pg.channel) == (
        "jobs_billing",
        "taskflow_jobs_billing",
    )
    kept = QueueTasks("billing", broker=from_url("postgresql://u:p@h/db?schema=jobs"))
    assert isinstance(kept.broker, PostgresBroker)
    assert kept.broker.pg.schema == "jobs_taskflow"


async def test_upgrade_migrates_the_schema_of_the_app_it_names(schema: str) -> None:
    assert await upgrade(postgres_dsn(), schema, app="billing") == LATEST_VERSION
    conn = await asyncpg.connect(postgres_dsn())
    try:
        assert await conn.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", f'"{schema}_billing".tasks'
        )
        assert not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{schema}".tasks')
    finally:
        await conn.close()


def test_bad_options_are_explained() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        from_url("postgresql://u:p@h/db", pool=3)
    with pytest.raises(ValueError, match="schema name"):
        from_url("postgresql://u:p@h/db", schema="no spaces; drop")
    with pytest.raises(ConfigError, match=r"app name 'a\.b' cannot be used"):
        from_url("postgresql://u:p@h/db", app="a.b")
    with pytest.raises(ConfigError, match="at most 63"):
        from_url("postgresql://u:p@h/db", schema="s" * 40, app="a" * 30)
    with pytest.raises(ValueError, match="postgresql://"):
        from_url("mysql://u:p@h/db")


_WITHOUT_ASYNCPG = """
import sys

class NoAsyncpg:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "asyncpg":
            raise ImportError("asyncpg is not installed (blocked by the test)")

sys.meta_path.insert(0, NoAsyncpg())
import taskflow.postgres

try:
    taskflow.postgres.from_url("postgresql://u:p@h/db")
except taskflow.BackendUnavailable as exc:
    print(exc)
"""


@pytest.mark.timeout(120)  # longer than the default: its process's deadline is 60 s
def test_missing_asyncpg_says_what_to_install() -> None:
    """The module imports without asyncpg; using it says what to install."""
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_ASYNCPG],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert 'pip install "taskflow[postgres]"' in out
