"""Backend plugin for the conformance suite: PostgreSQL (kind ``postgres``).

Follows the protocol in ``tests/conformance/conftest.py``. ``backend_factory_postgres`` opens a
broker on the test database (``tests.services.postgres_dsn()``) in a fresh schema of its own
(``tftest_<random>_taskflow``: a random base and the default app's name; created and migrated
by the broker on open) and drops that schema with everything in it when the context closes, so
every test and every state-machine example starts empty and isolated. ``backend_url_postgres``
is a DSN with a random ``?schema=`` base; the schemas of every app built on it are dropped
afterwards.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager as AsyncContextManager

import asyncpg
import pytest

from taskflow.abc import Broker
from taskflow.postgres import PostgresBroker, from_url
from tests.services import postgres_dsn

BACKEND_KINDS: tuple[str, ...] = ("postgres",)

BrokerFactory = Callable[[], AsyncContextManager[Broker]]


def random_schema() -> str:
    """A schema name no other test uses."""
    return f"tftest_{os.urandom(6).hex()}"


async def drop_schema(dsn: str, schema: str) -> None:
    """Drop a test schema and the schemas of every app built on it (``<schema>_<app>``),
    with everything in them."""
    conn = await asyncpg.connect(dsn)
    try:
        names = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname = $1 OR starts_with(nspname, $2)",
            schema,
            f"{schema}_",
        )
        for (name,) in names:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


def postgres_factory(
    dsn: str, **options: object
) -> Callable[[], AsyncContextManager[PostgresBroker]]:
    """A factory of fresh brokers on `dsn`, each in its own schema, dropped on exit."""

    @contextlib.asynccontextmanager
    async def open_backend() -> AsyncIterator[PostgresBroker]:
        schema = random_schema()
        broker = from_url(dsn, schema=schema, **options)
        try:
            async with broker:
                yield broker
        finally:
            await drop_schema(dsn, schema)

    return open_backend


@pytest.fixture
def backend_factory_postgres() -> BrokerFactory:
    """Fresh, open PostgreSQL brokers on the test database (own schema, dropped afterwards)."""
    return postgres_factory(postgres_dsn())


@pytest.fixture
async def backend_url_postgres() -> AsyncIterator[str]:
    """A DSN of the test database with a schema base of the test's own (apps' schemas are
    ``<base>_<app>``, all dropped afterwards)."""
    dsn, schema = postgres_dsn(), random_schema()
    try:
        yield f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    finally:
        await drop_schema(dsn, schema)
