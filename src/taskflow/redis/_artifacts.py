"""`RedisArtifactStore`: artifact bytes in Redis, in 1 MiB chunks, on the broker's connections.

Keys, all in the hash slot of the task (``{art:<task id>}``), so every step of one artifact is
one slot of a Redis Cluster:

* ``<prefix>art:{art:<task>}:h:<name>``: the head, a hash naming the visible upload (``sid``),
  its chunk count, size and SHA-256;
* ``<prefix>art:{art:<task>}:d:<upload id>``: one upload's chunks, a hash ``index -> bytes``;
* ``<prefix>art:staging``: a sorted set of the uploads in progress (task, name, upload id)
  scored by their start time, which `sweep_partial` reads.

A write registers its upload in the staging set, writes its chunks under a fresh upload id (the
chunks key carries a TTL, refreshed by each chunk, as a backstop should nothing ever sweep),
then commits with ``lua/artifact_commit.lua``: one atomic call that checks every chunk is there,
points the head at the upload and gives the version it replaced a short expiry instead of
deleting it, so a reader in progress finishes the version it started (each chunk it reads
pushes that expiry back). A delete does the same to the last version (``lua/artifact_delete``).
A reader reads the head, then the chunks one by one.

What does not live here: cutting and hashing the stream (``_artifact_pieces.py``), the
connections (``_storage.py``), the contract (``abc/_artifacts.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Final

from .._artifact_pieces import Tally, fixed_pieces
from .._exceptions import ArtifactNotFound, LifecycleError
from ..abc import ArtifactBlob, ArtifactStore
from ._codec import time_arg
from ._storage import RedisStorage

__all__ = ["RedisArtifactStore"]

#: How long a replaced or deleted version's chunks stay for the readers in progress, counted
#: from the last chunk any of them read: a reader that pauses longer loses the rest.
RETIRED_TTL_S: Final = 120

#: The TTL of an upload's chunks while it is written, refreshed by each chunk: a backstop that
#: drops the leftovers of a killed writer should `sweep_partial` never run.
STAGING_TTL_S: Final = 86_400

#: Uploads `sweep_partial` looks at per round trip.
_SWEEP_BATCH: Final = 100


class RedisArtifactStore(ArtifactStore):
    """Artifact bytes in Redis (single node or cluster), on the connections of a `RedisStorage`.

    Built by `RedisBroker.default_artifact_store`. It owns no connection: open it after the
    broker and close it before (opening checks that the storage is open).

    Args:
        storage: The `RedisStorage` whose client it uses.
    """

    def __init__(self, storage: RedisStorage) -> None:
        self._rs = storage

    async def _open(self) -> None:
        if not self._rs.is_open:
            raise LifecycleError(
                "RedisArtifactStore uses its broker's connections: open the broker first "
                "(`async with app:` opens both)"
            )

    @property
    def _client(self) -> Any:
        return self._rs.client

    # -- keys ----------------------------------------------------------------------------------

    def _base(self, task_id: str) -> str:
        """The start of a task's artifact keys, its hash tag included. A task id with braces
        would end the tag early (or make it empty): such ids are tagged by their hash."""
        tag = task_id
        if "{" in task_id or "}" in task_id:
            tag = hashlib.sha256(task_id.encode()).hexdigest()[:32]
        return f"{self._rs.prefix}art:{{art:{tag}}}:"

    def _head(self, task_id: str, name: str) -> str:
        return f"{self._base(task_id)}h:{name}"

    def _chunks(self, task_id: str, upload: str) -> str:
        return f"{self._base(task_id)}d:{upload}"

    @property
    def _staging(self) -> str:
        return f"{self._rs.prefix}art:staging"

    # -- write ---------------------------------------------------------------------------------

    async def _write(
        self, task_id: str, name: str, pieces: AsyncIterable[bytes], now: float
    ) -> ArtifactBlob:
        upload = secrets.token_hex(8)
        member = json.dumps([task_id, name, upload])
        await self._client.zadd(self._staging, {member: now})
        try:
            tally, count = await self._write_chunks(self._chunks(task_id, upload), pieces)
            await self._commit(task_id, name, upload, count, tally.blob())
        except Exception:
            # A failed write cleans up now; a cancelled or killed one, or one whose cleanup
            # fails too (the server is away), leaves its chunks to sweep_partial (or their TTL).
            with contextlib.suppress(Exception):
                await self._client.unlink(self._chunks(task_id, upload))
                await self._client.zrem(self._staging, member)
            raise
        await self._client.zrem(self._staging, member)
        return tally.blob()

    async def _write_chunks(self, key: str, pieces: AsyncIterable[bytes]) -> tuple[Tally, int]:
        tally, count = Tally(), 0
        async for chunk in fixed_pieces(pieces):
            await tally.add_off_loop(chunk)
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hset(key, str(count), chunk)
                pipe.expire(key, STAGING_TTL_S)
                await pipe.execute()
            count += 1
        return tally, count

    async def _commit(
        self, task_id: str, name: str, upload: str, count: int, blob: ArtifactBlob
    ) -> None:
        """Point the head at `upload` (see ``lua/artifact_commit.lua``), again if another
        write changed the head between reading it and the call.

        Raises:
            ArtifactNotFound: the upload's chunks are gone (swept as abandoned).
        """
        head, chunks = self._head(task_id, name), self._chunks(task_id, upload)
        while True:
            seen = await self._client.hget(head, "sid")
            seen_id = "" if seen is None else seen.decode()
            old = self._chunks(task_id, seen_id) if seen_id else chunks
            args = [upload, seen_id, count, blob.size, blob.sha256, RETIRED_TTL_S]
            done = await self._rs.run_script("artifact_commit", [head, chunks, old], args)
            if done == 1:
                return
            if done == -1:
                raise ArtifactNotFound(
                    task_id,
                    name,
                    "its upload was swept as abandoned before it finished (sweep_partial with "
                    "a cutoff later than the write's start): sweep only writes older than the "
                    "longest put",
                )

    # -- read ----------------------------------------------------------------------------------

    async def _read(self, task_id: str, name: str) -> AsyncIterator[bytes]:
        upload, count = await self._client.hmget(self._head(task_id, name), "sid", "n")
        if upload is None:
            raise ArtifactNotFound(task_id, name)
        key = self._chunks(task_id, upload.decode())
        for index in range(int(count)):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hget(key, str(index))
                pipe.pttl(key)
                chunk, ttl_ms = await pipe.execute()
            if ttl_ms > 0:  # replaced or deleted while read: keep it while this reader reads
                await self._client.expire(key, RETIRED_TTL_S)
            if chunk is None:
                raise ArtifactNotFound(
                    task_id,
                    name,
                    f"it was replaced or deleted while being read, and the reader paused more "
                    f"than {RETIRED_TTL_S} s between pieces: read it again",
                )
            yield chunk

    # -- delete and sweep ----------------------------------------------------------------------

    async def _delete(self, task_id: str, name: str) -> bool:
        head = self._head(task_id, name)
        while True:
            seen = await self._client.hget(head, "sid")
            if seen is None:
                return False
            chunks = self._chunks(task_id, seen.decode())
            done = await self._rs.run_script(
                "artifact_delete", [head, chunks], [seen, RETIRED_TTL_S]
            )
            if done != -1:
                return bool(done)

    async def _sweep_partial(self, older_than: float) -> int:
        removed = 0
        while True:
            members = await self._client.zrangebyscore(
                self._staging, "-inf", f"({time_arg(older_than)}", start=0, num=_SWEEP_BATCH
            )
            for member in members:
                removed += await self._sweep_one(member)
            if len(members) < _SWEEP_BATCH:
                return removed

    async def _sweep_one(self, member: bytes) -> int:
        """Remove one abandoned upload's chunks (unless it was committed); 1 if it was a
        leftover."""
        task_id, name, upload = json.loads(member)
        keys = [self._head(task_id, name), self._chunks(task_id, upload)]
        leftover = int(await self._rs.run_script("artifact_sweep", keys, [upload]))
        await self._client.zrem(self._staging, member)
        return leftover
