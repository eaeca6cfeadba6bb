"""`PostgresCoordination`: leases with fencing tokens and versioned key-value records.

They live in the app schema's ``leases`` and ``kv`` tables and go through the storage's pool
(`PostgresStorage.run`): the broker opens the coordination after the storage and closes it
before. What does not live here: the SQL (``_sql_coordination.py``), task records
(``_storage.py``).
"""

from __future__ import annotations

from typing import Any

from ..abc import Coordination, LeaseInfo, Versioned
from ._codec import lease_info, versioned
from ._schema import quote_schema
from ._sql_coordination import CoordinationStatements
from ._storage import PostgresStorage

__all__ = ["PostgresCoordination"]


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


def _changed_one(status: str) -> bool:
    """Whether a statement's status (``UPDATE 1``, ``DELETE 0``) says it changed one row."""
    return status.endswith(" 1")
