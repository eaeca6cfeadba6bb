"""Backend plugin for the conformance suite: PostgreSQL (kind ``postgres``).

Follows the protocol in ``tests/conformance/conftest.py``. ``backend_factory_postgres`` opens a
broker on the test database (``tests.services.postgres_dsn()``) in a schema no other open broker
uses. Creating and migrating a schema costs far more than emptying one, so schemas are recycled
within a test session: when a broker closes, its schema's rows are deleted and the schema goes
back to a free list; at the end of the session every schema it
made is dropped. Each test and each state-machine example therefore starts empty and isolated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager as AsyncContextManager

import asyncpg
import pytest

from taskflow.abc import Broker
from taskflow.postgres import PostgresBroker, from_url
from tests.services import postgres_dsn

BACKEND_KINDS: tuple[str, ...] = ("postgres",)

BrokerFactory = Callable[[], AsyncContextManager[Broker]]

_TABLES = ("tasks", "events", "leases", "kv")


def random_schema() -> str:
    """A schema name no other test uses."""
    return f"tftest_{os.urandom(6).hex()}"


async def drop_schema(dsn: str, schema: str) -> None:
    """Drop a test schema and everything in it."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def empty_schema(dsn: str, schema: str) -> None:
    """Delete every row of a taskflow schema (DELETE: far cheaper than TRUNCATE on a few rows)."""
    statements = "; ".join(f'DELETE FROM "{schema}".{table}' for table in _TABLES)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statements)
    finally:
        await conn.close()


class SchemaPool:
    """Schemas made during a session: the free ones, and all of them (to drop at the end)."""

    def __init__(self) -> None:
        self.free: list[str] = []
        self.made: list[str] = []

    def take(self) -> str:
        if self.free:
            return self.free.pop()
        schema = random_schema()
        self.made.append(schema)
        return schema

    async def give_back(self, dsn: str, schema: str) -> None:
        try:
            await empty_schema(dsn, schema)
        except Exception:  # never recycle a schema that may not be empty
            with contextlib.suppress(Exception):
                await drop_schema(dsn, schema)
            return
        self.free.append(schema)


def postgres_factory(
    dsn: str, pool: SchemaPool | None = None, **options: object
) -> Callable[[], AsyncContextManager[PostgresBroker]]:
    """A factory of fresh brokers on `dsn`, each in a schema of its own while it is open.

    With a `pool` the schema is emptied and recycled afterwards; without one it is dropped.
    """

    @contextlib.asynccontextmanager
    async def open_backend() -> AsyncIterator[PostgresBroker]:
        schema = pool.take() if pool is not None else random_schema()
        broker = from_url(dsn, schema=schema, **options)
        try:
            async with broker:
                yield broker
        finally:
            if pool is not None:
                await pool.give_back(dsn, schema)
            else:
                await drop_schema(dsn, schema)

    return open_backend


@pytest.fixture(scope="session")
def postgres_schema_pool() -> Iterator[SchemaPool]:
    """The session's recycled test schemas; all dropped when the session ends."""
    pool = SchemaPool()
    yield pool
    if pool.made:

        async def drop_all() -> None:
            for schema in pool.made:
                with contextlib.suppress(Exception):
                    await drop_schema(postgres_dsn(), schema)

        asyncio.run(drop_all())


@pytest.fixture
def backend_factory_postgres(postgres_schema_pool: SchemaPool) -> BrokerFactory:
    """Fresh, open PostgreSQL brokers on the test database (own, empty schema each)."""
    return postgres_factory(postgres_dsn(), postgres_schema_pool)
