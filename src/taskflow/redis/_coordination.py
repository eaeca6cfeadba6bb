"""`RedisCoordination`: leases, reader/writer locks and key-value records on Redis.

A lease is one hash (``<prefix>lease:<name>``: owner, fencing token, expiry) changed by
``lua/lease.lua``; a key-value namespace is two hashes (values, versions) written by
``lua/kv_set.lua``; the worker registry is a hash of entries and a sorted set of their
expiries (``<prefix>{workers}:d`` and ``:x``, one slot) changed by ``lua/workers.lua``. All
run through the storage's connections. The reader/writer locks are `RedisLocks` (``_locks.py``).

What does not live here: task records (``_storage.py``), the message path (``_broker.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._message import (
    LeaseInfo,
    LockHold,
    LockRequest,
    LockState,
    Versioned,
    WorkerInfo,
    decode_worker,
    encode_worker,
)
from ..abc import Coordination
from ._codec import time_arg
from ._locks import RedisLocks
from ._storage import RedisStorage

__all__ = ["RedisCoordination"]


class RedisCoordination(Coordination):
    """Leases (one hash each, changed by ``lua/lease.lua``) and key-value records (two hashes
    per namespace, written by ``lua/kv_set.lua``), through the storage's connections (opened
    and closed by the broker, after and before the storage).

    Args:
        storage: The `RedisStorage` of the same server.
    """

    def __init__(self, storage: RedisStorage) -> None:
        self._rs = storage
        self._locks = RedisLocks(storage)

    # -- leases ----------------------------------------------------------------------------

    def _lease_key(self, name: str) -> str:
        return f"{self._rs.prefix}lease:{name}"

    async def _lease(
        self, name: str, op: str, owner: str, token: int, exp: float, now: float
    ) -> Any:
        args = [op, owner, str(token), time_arg(exp), time_arg(now)]
        return await self._rs.run_script("lease", [self._lease_key(name)], args)

    async def _acquire_lease(self, name: str, owner: str, ttl_s: float, now: float) -> int | None:
        token = await self._lease(name, "acquire", owner, 0, now + ttl_s, now)
        return None if token is None else int(token)

    async def _renew_lease(
        self, name: str, owner: str, token: int, ttl_s: float, now: float
    ) -> bool:
        return bool(await self._lease(name, "renew", owner, token, now + ttl_s, now))

    async def _release_lease(self, name: str, owner: str, token: int) -> bool:
        return bool(await self._lease(name, "release", owner, token, 0.0, 0.0))

    async def _get_lease(self, name: str, now: float) -> LeaseInfo | None:
        owner, token, exp = await self._rs.client.hmget(
            self._lease_key(name), "owner", "tok", "exp"
        )
        if not owner or exp is None or float(exp) <= now:
            return None
        return LeaseInfo(name=name, owner=owner.decode(), token=int(token), expires_at=float(exp))

    # -- reader/writer locks ---------------------------------------------------------------

    async def _acquire_locks(
        self, requests: Sequence[LockRequest], ttl_s: float, now: float
    ) -> list[int | None]:
        return await self._locks.acquire(requests, ttl_s, now)

    async def _renew_locks(self, holds: Sequence[LockHold], ttl_s: float, now: float) -> list[bool]:
        return await self._locks.renew(holds, ttl_s, now)

    async def _release_locks(
        self, holds: Sequence[LockHold], ttl_s: float, now: float
    ) -> list[str]:
        return await self._locks.release(holds, ttl_s, now)

    async def _withdraw_lock_requests(
        self, requests: Sequence[LockRequest], ttl_s: float, now: float
    ) -> list[str]:
        return await self._locks.withdraw(requests, ttl_s, now)

    async def _lock_states(self, names: list[str] | None, now: float) -> list[LockState]:
        return await self._locks.states(names, now)

    # -- the worker registry ---------------------------------------------------------------

    def _worker_keys(self) -> list[str]:
        base = f"{self._rs.prefix}{{workers}}"
        return [f"{base}:d", f"{base}:x"]

    async def _register_workers(self, entries: list[WorkerInfo], now: float) -> None:
        args: list[Any] = ["put", time_arg(now)]
        for entry in entries:
            args += [entry.id, time_arg(entry.expires_at), encode_worker(entry)]
        await self._rs.run_script("workers", self._worker_keys(), args)

    async def _list_workers(self, now: float) -> list[WorkerInfo]:
        flat = await self._rs.run_script("workers", self._worker_keys(), ["list", time_arg(now)])
        entries = [decode_worker(data) for data in flat[1::2]]
        return sorted(entries, key=lambda e: e.id)

    async def _unregister_workers(self, worker_ids: list[str]) -> None:
        # "now" 0: deleting these must not depend on a clock; nothing lapses at time 0.
        await self._rs.run_script("workers", self._worker_keys(), ["del", "0", *worker_ids])

    # -- key-value records -----------------------------------------------------------------

    def _kv_keys(self, namespace: str) -> list[str]:
        base = f"{self._rs.prefix}kv:{{{namespace}}}"
        return [f"{base}:d", f"{base}:v"]

    async def _kv_get(self, namespace: str, key: str) -> Versioned | None:
        data_key, version_key = self._kv_keys(namespace)
        async with self._rs.client.pipeline(transaction=False) as pipe:
            pipe.hget(data_key, key)
            pipe.hget(version_key, key)
            value, version = await pipe.execute()
        return None if value is None else Versioned(value, int(version or 1))

    async def _kv_set(
        self, namespace: str, key: str, value: bytes, expect_version: int | None
    ) -> int | None:
        expect = "" if expect_version is None else str(expect_version)
        version = await self._rs.run_script(
            "kv_set", self._kv_keys(namespace), [key, value, expect]
        )
        return None if version is None else int(version)

    async def _kv_list(self, namespace: str) -> dict[str, Versioned]:
        data_key, version_key = self._kv_keys(namespace)
        async with self._rs.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(data_key)
            pipe.hgetall(version_key)
            values, versions = await pipe.execute()
        return {k.decode(): Versioned(v, int(versions.get(k, b"1"))) for k, v in values.items()}

    async def _kv_delete(self, namespace: str, key: str) -> bool:
        data_key, version_key = self._kv_keys(namespace)
        async with self._rs.client.pipeline(transaction=False) as pipe:
            pipe.hdel(data_key, key)
            pipe.hdel(version_key, key)
            removed, _ = await pipe.execute()
        return bool(removed)
