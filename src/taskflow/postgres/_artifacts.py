"""`PostgresArtifactStore`: artifact bytes in PostgreSQL, in 1 MiB rows, on the broker's pool.

Three tables of the app schema (``_schema.py``, version 8): ``artifact_uploads`` (one row per
upload: its key, its start time, whether it was committed), ``artifact_chunks`` (its 1 MiB
rows, dropped with it) and ``artifacts`` (per key, the visible upload, its size and SHA-256).

A write stages an upload row, then inserts its chunks one statement each, so no transaction
stays open while a 200 MB artifact is produced; then one short transaction commits it: marks
the upload committed, points the key's head at it and deletes the upload it replaced. A reader
reads the head and the chunks in one read-only REPEATABLE READ transaction through a cursor (a
couple of rows at a time): its snapshot keeps the version it started with readable to the end,
even if a replace or a delete commits meanwhile. `sweep_partial` deletes staged uploads that
started before the cutoff; a writer whose upload was swept fails at its commit.

What does not live here: the SQL (``_sql_artifacts.py``), cutting and hashing the stream
(``_artifact_pieces.py``), the connections (``_client.py``, through the storage).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Final

from .._artifact_pieces import Tally, fixed_pieces
from .._exceptions import ArtifactNotFound, LifecycleError
from ..abc import ArtifactBlob, ArtifactStore
from ._client import Conn
from ._schema import quote_schema
from ._sql_artifacts import ArtifactStatements
from ._storage import PostgresStorage

__all__ = ["PostgresArtifactStore"]

#: Rows a reader's cursor fetches per round trip: two chunks in memory at most.
_PREFETCH: Final = 2


class PostgresArtifactStore(ArtifactStore):
    """Artifact bytes in the app schema's tables, on the pool of a `PostgresStorage`.

    Built by `PostgresBroker.default_artifact_store`. It owns no connection: open it after the
    broker and close it before (opening checks that the storage is open).

    Args:
        storage: The `PostgresStorage` whose pool it uses.
    """

    def __init__(self, storage: PostgresStorage) -> None:
        self._pg = storage
        self.sql = ArtifactStatements(quote_schema(storage.schema))

    async def _open(self) -> None:
        if not self._pg.is_open:
            raise LifecycleError(
                "PostgresArtifactStore uses its broker's pool: open the broker first "
                "(`async with app:` opens both)"
            )

    # -- write ---------------------------------------------------------------------------------

    async def _write(
        self, task_id: str, name: str, pieces: AsyncIterable[bytes], now: float
    ) -> ArtifactBlob:
        upload = secrets.token_hex(12)
        sql = self.sql
        await self._pg.run(lambda conn: conn.execute(sql.stage, upload, task_id, name, now))
        try:
            tally = await self._write_chunks(upload, pieces)
            blob = tally.blob()
            if not await self._pg.run(lambda conn: self._commit(conn, task_id, name, upload, blob)):
                raise ArtifactNotFound(
                    task_id,
                    name,
                    "its upload was swept as abandoned before it finished (sweep_partial with "
                    "a cutoff later than the write's start): sweep only writes older than the "
                    "longest put",
                )
        except Exception:
            # A failed write cleans up now; a cancelled or killed one, or one whose cleanup
            # fails too (the server is away), leaves its rows to sweep_partial.
            with contextlib.suppress(Exception):
                await self._pg.run(lambda conn: conn.execute(sql.drop_upload, upload))
            raise
        return blob

    async def _write_chunks(self, upload: str, pieces: AsyncIterable[bytes]) -> Tally:
        tally, seq = Tally(), 0
        async for chunk in fixed_pieces(pieces):
            await tally.add_off_loop(chunk)
            await self._pg.run(self._adding(upload, seq, chunk))
            seq += 1
        return tally

    def _adding(self, upload: str, seq: int, chunk: bytes) -> Callable[[Conn], Awaitable[str]]:
        """The call that stores one chunk (run, and retried, by the storage)."""
        return lambda conn: conn.execute(self.sql.add_chunk, upload, seq, chunk)

    async def _commit(
        self, conn: Conn, task_id: str, name: str, upload: str, blob: ArtifactBlob
    ) -> bool:
        """Make `upload` the visible version of the key and drop the one it replaces, in one
        transaction; False if the upload is gone (swept)."""
        sql = self.sql
        async with conn.transaction():
            if await conn.execute(sql.mark_committed, upload) == "UPDATE 0":
                # Swept, or committed by an attempt whose reply was lost (then it is visible).
                return bool(await conn.fetchval(sql.head, task_id, name) == upload)
            await conn.execute(sql.point_head, task_id, name, upload, blob.size, blob.sha256)
            await conn.execute(sql.drop_replaced, task_id, name, upload)
        return True

    # -- read ----------------------------------------------------------------------------------

    async def _read(self, task_id: str, name: str) -> AsyncIterator[bytes]:
        async with (
            self._pg.connections.lend() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            upload = await conn.fetchval(self.sql.head, task_id, name)
            if upload is None:
                raise ArtifactNotFound(task_id, name)
            async for row in conn.cursor(self.sql.chunks, upload, prefetch=_PREFETCH):
                yield row["data"]

    # -- delete and sweep ----------------------------------------------------------------------

    async def _delete(self, task_id: str, name: str) -> bool:
        return await self._pg.run(lambda conn: self._drop(conn, task_id, name))

    async def _drop(self, conn: Conn, task_id: str, name: str) -> bool:
        async with conn.transaction():
            upload = await conn.fetchval(self.sql.drop_head, task_id, name)
            if upload is None:
                return False
            await conn.execute(self.sql.drop_upload, upload)
        return True

    async def _sweep_partial(self, older_than: float) -> int:
        status = await self._pg.run(lambda conn: conn.execute(self.sql.sweep, older_than))
        return int(status.rpartition(" ")[2])
