"""taskflow on PostgreSQL: the six workloads, its worker a separate process started by its CLI.

Uses schema `SCHEMA` (``taskflow_bench``) of the given database (``?schema=`` in the DSN): the
app ``bench`` keeps its tables in ``taskflow_bench_bench``, dropped before every run and
re-created by taskflow's migrations when the producer opens the app. Run it as
``python benchmarks/adapters/taskflow_postgres.py --workload B --url postgresql://...``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit, urlunsplit

import _harness
import _servers
import asyncpg
from _taskflow_app import APP_NAME
from _taskflow_server import TaskflowServer

from taskflow.postgres import app_schema

SCHEMA = _servers.bench_schema("taskflow_bench")


def resolve(url: str | None, schema: str = SCHEMA) -> str:
    """The DSN with ``?schema=<schema>``."""
    parts = urlsplit(_servers.postgres_url(url))
    query = "&".join(q for q in (parts.query, f"schema={schema}") if q)
    return urlunsplit(parts._replace(query=query))


def plain_dsn(url: str) -> str:
    """The DSN without taskflow's ``schema`` parameter (asyncpg would send it to the server)."""
    return urlunsplit(urlsplit(url)._replace(query=""))


def schema_of(url: str) -> str:
    """The ``schema`` parameter of a DSN made by `resolve`."""
    return dict(parse_qsl(urlsplit(url).query))["schema"]


def tables_of(url: str) -> str:
    """The schema the benchmark app's tables are in, on a DSN made by `resolve`."""
    return app_schema(schema_of(url), APP_NAME)


async def drop_schema(url: str) -> None:
    """DROP the app's schema CASCADE (taskflow re-creates it on open)."""
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {tables_of(url)} CASCADE")
    finally:
        await conn.close()


class TaskflowPostgres(TaskflowServer):
    """`TaskflowServer` on PostgreSQL, in its own `schema`."""

    def __init__(self, schema: str = SCHEMA) -> None:
        super().__init__(lambda url: resolve(url, schema), drop_schema)
        self.schema = schema


def run(system: str, server: TaskflowServer, notes: dict[str, str] | None = None) -> None:
    """`_harness.main` for a taskflow PostgreSQL adapter."""
    _harness.main(
        system,
        server.workloads(),
        distributions=("taskflow", "asyncpg", "msgspec"),
        notes=notes,
    )


if __name__ == "__main__":
    run("taskflow-postgres", TaskflowPostgres())
