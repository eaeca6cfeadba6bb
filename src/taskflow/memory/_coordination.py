"""`MemoryCoordination`: named leases, reader/writer locks and key-value records in this
process's memory.

Like the memory storage, its data outlives a `close` (a closed memory backend opens again with
everything it held) and no other process can see it. What does not live here: tasks
(`MemoryStorage`), messages (`MemoryBroker`), the locks' rules (``_locks.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..abc import Coordination, LeaseInfo, LockHold, LockRequest, LockState, Versioned, WorkerInfo
from ._locks import LockTable

__all__ = ["MemoryCoordination"]


class _NamedLease:
    """A coordination lease; kept after release so the next token is still higher."""

    __slots__ = ("expires_at", "owner", "token")

    def __init__(self) -> None:
        self.owner: str | None = None
        self.token = 0
        self.expires_at = 0.0


class MemoryCoordination(Coordination):
    """Leases with fencing tokens and a versioned key-value space, in dicts of this process.

    Brokers that should share leases and records are given the same object
    (``MemoryBroker(storage, coordination=...)``).
    """

    def __init__(self) -> None:
        self._kv: dict[str, dict[str, Versioned]] = {}
        self._leases: dict[str, _NamedLease] = {}
        self._locks = LockTable()
        self._workers: dict[str, WorkerInfo] = {}

    # -- leases ----------------------------------------------------------------------------

    async def _acquire_lease(self, name: str, owner: str, ttl_s: float, now: float) -> int | None:
        lease = self._leases.get(name)
        if lease is None:
            lease = self._leases[name] = _NamedLease()
        held = lease.owner is not None and lease.expires_at > now
        if held and lease.owner != owner:
            return None
        if not held:
            # Ownership changes (or is re-taken after a lapse): a new, higher token.
            lease.token += 1
            lease.owner = owner
        lease.expires_at = now + ttl_s
        return lease.token

    async def _renew_lease(
        self, name: str, owner: str, token: int, ttl_s: float, now: float
    ) -> bool:
        lease = self._leases.get(name)
        if lease is None or lease.owner != owner or lease.token != token:
            return False
        lease.expires_at = now + ttl_s
        return True

    async def _release_lease(self, name: str, owner: str, token: int) -> bool:
        lease = self._leases.get(name)
        if lease is None or lease.owner != owner or lease.token != token:
            return False
        lease.owner = None
        lease.expires_at = 0.0
        return True

    async def _get_lease(self, name: str, now: float) -> LeaseInfo | None:
        lease = self._leases.get(name)
        if lease is None or lease.owner is None or lease.expires_at <= now:
            return None
        return LeaseInfo(
            name=name, owner=lease.owner, token=lease.token, expires_at=lease.expires_at
        )

    # -- reader/writer locks ---------------------------------------------------------------

    async def _acquire_locks(
        self, requests: Sequence[LockRequest], ttl_s: float, now: float
    ) -> list[int | None]:
        return self._locks.acquire(requests, ttl_s, now)

    async def _renew_locks(self, holds: Sequence[LockHold], ttl_s: float, now: float) -> list[bool]:
        return self._locks.renew(holds, ttl_s, now)

    async def _release_locks(
        self, holds: Sequence[LockHold], ttl_s: float, now: float
    ) -> list[str]:
        return self._locks.release(holds, ttl_s, now)

    async def _withdraw_lock_requests(
        self, requests: Sequence[LockRequest], ttl_s: float, now: float
    ) -> list[str]:
        return self._locks.withdraw(requests, ttl_s, now)

    async def _lock_states(self, names: list[str] | None, now: float) -> list[LockState]:
        return self._locks.states(names, now)

    # -- the worker registry ---------------------------------------------------------------

    async def _register_workers(self, entries: list[WorkerInfo], now: float) -> None:
        self._drop_lapsed_workers(now)
        for entry in entries:
            self._workers[entry.id] = entry

    async def _list_workers(self, now: float) -> list[WorkerInfo]:
        self._drop_lapsed_workers(now)
        return [self._workers[worker_id] for worker_id in sorted(self._workers)]

    async def _unregister_workers(self, worker_ids: list[str]) -> None:
        for worker_id in worker_ids:
            self._workers.pop(worker_id, None)

    def _drop_lapsed_workers(self, now: float) -> None:
        lapsed = [w.id for w in self._workers.values() if w.expires_at <= now]
        for worker_id in lapsed:
            del self._workers[worker_id]

    # -- key-value records -----------------------------------------------------------------

    async def _kv_get(self, namespace: str, key: str) -> Versioned | None:
        return self._kv.get(namespace, {}).get(key)

    async def _kv_set(
        self, namespace: str, key: str, value: bytes, expect_version: int | None
    ) -> int | None:
        space = self._kv.setdefault(namespace, {})
        current = space.get(key)
        current_version = 0 if current is None else current.version
        if expect_version is not None and expect_version != current_version:
            return None
        space[key] = Versioned(value=bytes(value), version=current_version + 1)
        return current_version + 1

    async def _kv_list(self, namespace: str) -> dict[str, Versioned]:
        return dict(self._kv.get(namespace, {}))

    async def _kv_delete(self, namespace: str, key: str) -> bool:
        space = self._kv.get(namespace)
        if space is None or key not in space:
            return False
        del space[key]
        if not space:
            del self._kv[namespace]
        return True
