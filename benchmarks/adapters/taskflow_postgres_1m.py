"""taskflow on PostgreSQL with 1,000,000 finished tasks already in its table: workload B only.

The rows are seeded once (untimed) with one ``INSERT ... SELECT generate_series`` and the
table ANALYZEd (as autovacuum would have done on a table that grew to that size); later runs
keep them and delete only what earlier runs added. So B shows what a long-lived table costs the
claim and complete statements. The other workloads are n/a here: ``taskflow-postgres`` measures
them on an empty table. ``TASKFLOW_BENCH_FINISHED_ROWS`` sets another row count (the tests use
a small one).
"""

from __future__ import annotations

import os

import _harness
import _servers
import asyncpg
from _harness import Metrics, NotApplicable, Params
from _taskflow_app import APP_NAME
from taskflow_postgres import TaskflowPostgres, plain_dsn

from taskflow.postgres import app_schema

SCHEMA = _servers.bench_schema("taskflow_bench_1m")
"""A schema of its own, so the seeded rows outlive the runs of ``taskflow-postgres``."""
TABLES = app_schema(SCHEMA, APP_NAME)
"""Where the app's tables are: ``<schema>_<app name>``."""
FINISHED_ROWS = int(os.environ.get("TASKFLOW_BENCH_FINISHED_ROWS", "1000000"))

SEEDED_SQL = f"SELECT count(*) FROM {TABLES}.tasks WHERE id LIKE 'seed-%'"
SEED_SQL = f"""
INSERT INTO {TABLES}.tasks
    (id, name, queue, status, due_at, attempts, data, created_at, started_at, finished_at,
     result, result_expires_at)
SELECT 'seed-' || g, 'noop', 'default', 'done', 0, 1, '\\x'::bytea, 0, 0, 1, '\\xc0'::bytea, NULL
FROM generate_series(1, $1::int) AS g
"""


class TaskflowPostgresBig(TaskflowPostgres):
    """B on a table holding `FINISHED_ROWS` done tasks."""

    def __init__(self) -> None:
        super().__init__(SCHEMA)
        self.reset = keep_seeded_rows

    async def prepare_big(self, params: Params) -> None:
        """Seed the finished rows unless they are there (the app created the schema)."""
        conn = await asyncpg.connect(plain_dsn(self.url))
        try:
            seeded = await conn.fetchval(SEEDED_SQL)
            if seeded != FINISHED_ROWS:
                await conn.execute(f"DELETE FROM {TABLES}.tasks")
                await conn.execute(SEED_SQL, FINISHED_ROWS)
            await conn.execute(f"ANALYZE {TABLES}.tasks")
        finally:
            await conn.close()

    async def process_queued(self, params: Params) -> Metrics:
        """B, plus the table's finished rows (``finished_rows``)."""
        metrics = await super().process_queued(params)
        return metrics | {"finished_rows": FINISHED_ROWS}


async def keep_seeded_rows(url: str) -> None:
    """Delete what earlier runs added, keeping the seeded rows (or start from no schema)."""
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{TABLES}.tasks")
        if exists:
            await conn.execute(f"DELETE FROM {TABLES}.tasks WHERE id NOT LIKE 'seed-%'")
            await conn.execute(f"TRUNCATE {TABLES}.events")
    finally:
        await conn.close()


async def not_here(params: Params) -> Metrics:
    """Only B is measured with the big table."""
    raise NotApplicable("only B is measured on the 1,000,000-row table")


if __name__ == "__main__":
    server = TaskflowPostgresBig()
    workloads = dict.fromkeys(_harness.WORKLOADS, not_here) | {"B": server.process_queued}
    _harness.main(
        "taskflow-postgres-1m",
        workloads,
        distributions=("taskflow", "asyncpg", "msgspec"),
        notes={"B": "taskflow-postgres-1m: B with 1,000,000 finished rows seeded in the table."},
    )
