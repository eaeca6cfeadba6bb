"""What `PostgresArtifactStore` leaves in its tables beyond the conformance suite: replaced
versions go with the commit that replaced them (even when writes of one key race), a delete
takes the chunks too, and a reader's snapshot outlives a delete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from taskflow.postgres import PostgresArtifactStore, PostgresBroker
from tests.plugins.backend_postgres import BrokerFactory

pytestmark = pytest.mark.postgres

MiB = 1 << 20


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def rows(broker: PostgresBroker, table: str) -> int:
    schema = broker.storage.schema
    count = await broker.storage.run(
        lambda conn: conn.fetchval(f'SELECT count(*) FROM "{schema}".{table}')
    )
    return int(count)


async def test_replaced_and_deleted_versions_leave_no_rows(
    backend_factory_postgres: BrokerFactory,
) -> None:
    async with backend_factory_postgres() as broker:
        assert isinstance(broker, PostgresBroker)
        async with PostgresArtifactStore(broker.storage) as store:
            await asyncio.gather(
                *(store.write("t1", "a", one(bytes([i]) * (MiB + 1)), now=1.0) for i in range(5))
            )
            assert await rows(broker, "artifact_uploads") == 1
            assert await rows(broker, "artifact_chunks") == 2
            reader = store.read("t1", "a")
            first = await anext(reader)
            assert await store.delete("t1", "a") is True
            rest = [piece async for piece in reader]
            assert len(first) + sum(map(len, rest)) == MiB + 1  # the snapshot kept it
            for table in ("artifacts", "artifact_uploads", "artifact_chunks"):
                assert await rows(broker, table) == 0, table
