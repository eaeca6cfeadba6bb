"""What `RedisArtifactStore` keeps on the server beyond the conformance suite: an upload in
progress carries a TTL (a backstop should nothing sweep it), and every key of one artifact,
whatever its task id, is in one hash slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from taskflow.redis import RedisArtifactStore, RedisBroker
from tests.plugins.backend_redis import BrokerFactory

pytestmark = pytest.mark.redis


async def hanging(started: asyncio.Event) -> AsyncIterator[bytes]:
    yield b"x" * (3 << 20)
    started.set()
    await asyncio.Event().wait()


async def keys_of(broker: RedisBroker) -> list[bytes]:
    return [k async for k in broker.storage.client.scan_iter(match=f"{broker.storage.prefix}art:*")]


@pytest.mark.parametrize("task_id", ["t1", "odd{id}", "}x{", "{}"])
async def test_an_upload_in_progress_has_a_ttl_and_one_slot(
    backend_factory_redis: BrokerFactory, task_id: str
) -> None:
    async with backend_factory_redis() as broker:
        assert isinstance(broker, RedisBroker)
        async with RedisArtifactStore(broker.storage) as store:
            await store.write(task_id, "done.csv", once(b"ok"), now=1.0)
            started = asyncio.Event()
            writing = asyncio.create_task(store.write(task_id, "a{b}", hanging(started), now=2.0))
            await started.wait()
            client = broker.storage.client
            artifact_keys = [k for k in await keys_of(broker) if not k.endswith(b"staging")]
            assert len(artifact_keys) == 3  # the finished one's head and chunks, the upload's
            assert len({key_slot(k) for k in artifact_keys}) == 1
            ttls = sorted([await client.ttl(k) for k in artifact_keys])
            assert ttls[:2] == [-1, -1] and ttls[2] > 3600  # the upload's chunks only
            writing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await writing
            assert await store.sweep_partial(older_than=3.0) == 1
            assert len(await keys_of(broker)) == 2  # the finished artifact's head and chunks


async def once(data: bytes) -> AsyncIterator[bytes]:
    yield data
