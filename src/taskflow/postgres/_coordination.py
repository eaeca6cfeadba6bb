"""`PostgresCoordination`: leases with fencing tokens, reader/writer locks and versioned
key-value records.

They live in the app schema's ``leases``, ``locks``, ``lock_entries``, ``kv`` and ``workers``
(the worker registry) tables (a
batch of lock calls is one call of its ``lock_batch`` function) and go through the storage's pool
(`PostgresStorage.run`): the broker opens the coordination after the storage and closes it
before. What does not live here: the SQL (``_sql_coordination.py``), task records
(``_storage.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ..abc import (
    Coordination,
    LeaseInfo,
    LockHold,
    LockMode,
    LockRequest,
    LockState,
    Versioned,
    WorkerInfo,
    decode_worker,
    encode_worker,
)
from ._codec import lease_info, lock_states, versioned
from ._schema import quote_schema
from ._sql_coordination import CoordinationStatements
from ._storage import PostgresStorage

__all__ = ["PostgresCoordination"]

_MODE_CODE: Final = {LockMode.SHARED: "S", LockMode.EXCLUSIVE: "X"}


class PostgresCoordination(Coordination):
    """Leases and key-value records in the app schema's ``leases`` and ``kv`` tables, through
    the storage's pool (opened and closed by the broker, after and before the storage).

    Args:
        storage: The `PostgresStorage` of the same database.
    """

    def __init__(self, storage: PostgresStorage) -> None:
        self._pg = storage
        self.sql = CoordinationStatements(quote_schema(storage.schema))

    # -- leases ---------------------------------------------------------------------------------

    async def _acquire_lease(self, name: str, owner: str, ttl_s: float, now: float) -> int | None:
        token = await self._pg.run(
            lambda conn: conn.fetchval(self.sql.acquire_lease, name, owner, now, ttl_s)
        )
        return None if token is None else int(token)

    async def _renew_lease(
        self, name: str, owner: str, token: int, ttl_s: float, now: float
    ) -> bool:
        status = await self._pg.run(
            lambda conn: conn.execute(self.sql.renew_lease, name, owner, token, now, ttl_s)
        )
        return _changed_one(status)

    async def _release_lease(self, name: str, owner: str, token: int) -> bool:
        status = await self._pg.run(
            lambda conn: conn.execute(self.sql.release_lease, name, owner, token)
        )
        return _changed_one(status)

    async def _get_lease(self, name: str, now: float) -> LeaseInfo | None:
        row = await self._pg.run(lambda conn: conn.fetchrow(self.sql.get_lease, name, now))
        return None if row is None else lease_info(name, row)

    # -- reader/writer locks -------------------------------------------------------------------

    async def _lock_batch(
        self,
        op: str,
        entries: Sequence[LockRequest] | Sequence[LockHold],
        ttl_s: float,
        now: float,
    ) -> list[Any]:
        names = [e.name for e in entries]
        owners = [e.owner for e in entries]
        modes = [_MODE_CODE[e.mode] if isinstance(e, LockRequest) else None for e in entries]
        waits = [e.wait if isinstance(e, LockRequest) else None for e in entries]
        tokens = [e.token if isinstance(e, LockHold) else None for e in entries]
        args = (op, names, owners, modes, waits, tokens, now, now + ttl_s)
        rows: list[Any] = await self._pg.run(lambda conn: conn.fetch(self.sql.lock_batch, *args))
        return rows

    async def _acquire_locks(
        self, requests: Sequence[LockRequest], ttl_s: float, now: float
    ) -> list[int | None]:
        out: list[int | None] = [None] * len(requests)
        for row in await self._lock_batch("acquire", requests, ttl_s, now):
            if row["i"] is not None and row["result"] is not None:
                out[row["i"] - 1] = int(row["result"])
        return out

    async def _renew_locks(self, holds: Sequence[LockHold], ttl_s: float, now: float) -> list[bool]:
        out = [False] * len(holds)
        for row in await self._lock_batch("renew", holds, ttl_s, now):
            if row["i"] is not None:
                out[row["i"] - 1] = bool(row["result"])
        return out

    async def _release_locks(
        self, holds: Sequence[LockHold], ttl_s: float, now: float
    ) -> list[str]:
        return _granted(await self._lock_batch("release", holds, ttl_s, now))

    async def _withdraw_lock_requests(
        self, requests: Sequence[LockRequest], ttl_s: float, now: float
    ) -> list[str]:
        return _granted(await self._lock_batch("withdraw", requests, ttl_s, now))

    async def _lock_states(self, names: list[str] | None, now: float) -> list[LockState]:
        rows = await self._pg.run(lambda conn: conn.fetch(self.sql.lock_states, now, names))
        return lock_states(rows)

    # -- the worker registry -------------------------------------------------------------------

    async def _register_workers(self, entries: list[WorkerInfo], now: float) -> None:
        ids = [e.id for e in entries]
        blobs = [encode_worker(e) for e in entries]
        expiries = [e.expires_at for e in entries]
        sql = self.sql.register_workers
        await self._pg.run(lambda conn: conn.execute(sql, now, ids, blobs, expiries))

    async def _list_workers(self, now: float) -> list[WorkerInfo]:
        rows = await self._pg.run(lambda conn: conn.fetch(self.sql.list_workers, now))
        return [decode_worker(row["entry"]) for row in rows]

    async def _unregister_workers(self, worker_ids: list[str]) -> None:
        sql = self.sql.unregister_workers
        await self._pg.run(lambda conn: conn.execute(sql, worker_ids))

    # -- key-value records ----------------------------------------------------------------------

    async def _kv_get(self, namespace: str, key: str) -> Versioned | None:
        row = await self._pg.run(lambda conn: conn.fetchrow(self.sql.kv_get, namespace, key))
        return None if row is None else versioned(row)

    async def _kv_set(
        self, namespace: str, key: str, value: bytes, expect_version: int | None
    ) -> int | None:
        args: tuple[Any, ...]
        if expect_version is None:
            sql, args = self.sql.kv_upsert, (namespace, key, value)
        elif expect_version == 0:
            sql, args = self.sql.kv_create, (namespace, key, value)
        else:
            sql, args = self.sql.kv_replace, (namespace, key, value, expect_version)
        version = await self._pg.run(lambda conn: conn.fetchval(sql, *args))
        return None if version is None else int(version)

    async def _kv_list(self, namespace: str) -> dict[str, Versioned]:
        rows = await self._pg.run(lambda conn: conn.fetch(self.sql.kv_list, namespace))
        return {row["key"]: versioned(row) for row in rows}

    async def _kv_delete(self, namespace: str, key: str) -> bool:
        status = await self._pg.run(lambda conn: conn.execute(self.sql.kv_delete, namespace, key))
        return _changed_one(status)


def _granted(rows: list[Any]) -> list[str]:
    """The owners a lock batch granted, each once, in order."""
    return list(dict.fromkeys(row["granted"] for row in rows if row["granted"] is not None))


def _changed_one(status: str) -> bool:
    """Whether a statement's status (``UPDATE 1``, ``DELETE 0``) says it changed one row."""
    return status.endswith(" 1")
