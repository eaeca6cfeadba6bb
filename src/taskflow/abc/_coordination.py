"""The `Coordination` contract: named leases with fencing tokens, and a versioned key-value space.

What processes of one deployment agree on, apart from tasks: who leads (the orders'
`Supervisor` holds a lease), and the small durable records orders and plans are kept in,
written with compare-and-set; the registry of live workers (`register_workers`). The
elections and rate limits of later issues grow here, so they never widen `Storage`. What does
not live here: task records (`Storage`) and messages (`Broker`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import msgspec

from .._locknames import check_lock_name
from .._message import LeaseInfo, LockHold, LockRequest, LockState, Versioned, WorkerInfo
from ._lifecycle import Lifecycle

__all__ = ["Coordination"]


class Coordination(Lifecycle, ABC):
    """Leases with fencing tokens and a versioned key-value space, on the backend's server.

    A backend's coordination usually shares its storage's connections: the broker that
    carries it (`Broker.coordination`) opens it after the storage and closes it before.
    Subclasses implement the ``_hooks``. Like every contract, time comes in as ``now``.
    """

    # -- leases (leader election, named locks) ---------------------------------------------

    async def acquire_lease(self, name: str, owner: str, *, ttl_s: float, now: float) -> int | None:
        """Take the named lease for `owner` until ``now + ttl_s``, if it is free, lapsed, or
        already `owner`'s. Returns its fencing token (a new, higher one when ownership changes),
        or None if someone else holds it."""
        self._check_open()
        return await self._acquire_lease(name, owner, ttl_s, now)

    async def renew_lease(
        self, name: str, owner: str, token: int, *, ttl_s: float, now: float
    ) -> bool:
        """Extend a held lease; False if it lapsed and was taken, or the token is stale."""
        self._check_open()
        return await self._renew_lease(name, owner, token, ttl_s, now)

    async def release_lease(self, name: str, owner: str, token: int) -> bool:
        """Give a held lease up at once; False if it was not held with that token."""
        self._check_open()
        return await self._release_lease(name, owner, token)

    async def get_lease(self, name: str, *, now: float) -> LeaseInfo | None:
        """Who holds the named lease now (None if free or lapsed)."""
        self._check_open()
        return await self._get_lease(name, now)

    @abstractmethod
    async def _acquire_lease(self, name: str, owner: str, ttl_s: float, now: float) -> int | None:
        """See `acquire_lease`. A lease keeps its last token after it is released, so the next
        owner's is still higher."""

    @abstractmethod
    async def _renew_lease(
        self, name: str, owner: str, token: int, ttl_s: float, now: float
    ) -> bool:
        """See `renew_lease`."""

    @abstractmethod
    async def _release_lease(self, name: str, owner: str, token: int) -> bool:
        """See `release_lease`."""

    @abstractmethod
    async def _get_lease(self, name: str, now: float) -> LeaseInfo | None:
        """See `get_lease`."""

    # -- reader/writer locks (resource locks declared by tasks, `app.lock`) -----------------
    #
    # Rules (the conformance suite checks each one):
    # * A lock has holders (one EXCLUSIVE, or any number of SHARED) and a FIFO queue of waiters.
    #   Entries lapse at their `expires_at` (``now + ttl_s`` when granted, renewed or queued)
    #   and lapsed entries count for nothing.
    # * A SHARED request is granted iff there is no exclusive holder and no EXCLUSIVE waiter
    #   ahead of it in the queue (for a new request: anywhere in the queue). So once a writer
    #   waits, new readers queue behind it: a stream of readers cannot starve a writer.
    # * An EXCLUSIVE request is granted iff there are no holders (but its own owner) and no
    #   waiter ahead of it.
    # * A request by an owner that already holds the lock returns its token and renews it; one
    #   by a queued owner keeps its place and refreshes its expiry.
    # * Every grant gets a fencing token greater than any earlier token of that lock name, kept
    #   across releases (as leases do), so writes guarded by it can refuse an older holder.
    # * A release or a withdrawal (or a lapse noticed by any call touching the lock) grants the
    #   lock to the waiters now at the head of the queue, in the same atomic step: the head
    #   EXCLUSIVE waiter alone, or the run of SHARED waiters up to the next EXCLUSIVE one. They
    #   become holders (expiring ``now + ttl_s``) and `release_locks` (`withdraw_lock_requests`)
    #   returns their owners, so the caller can wake them (`Broker.wake` for parked tasks, the
    #   app's `LockWaiters` for `app.lock`); their next request finds the lock theirs.
    # * A withdrawal takes its owner's request out of the queue, or gives back the lock if it
    #   was granted to that owner meanwhile.
    # * Lock names are checked here (`check_lock_name`) before the hooks are called; the hooks
    #   get `lock_states` names distinct and sorted.

    async def acquire_locks(
        self, requests: Sequence[LockRequest], *, ttl_s: float, now: float
    ) -> list[int | None]:
        """Request locks, in one round trip. Per request: its fencing token if granted (held
        until ``now + ttl_s``), else None (and, with ``wait``, it is queued)."""
        self._check_open()
        if not requests:
            return []
        _check_names(r.name for r in requests)
        return await self._acquire_locks(requests, ttl_s, now)

    async def renew_locks(
        self, holds: Sequence[LockHold], *, ttl_s: float, now: float
    ) -> list[bool]:
        """Extend held locks until ``now + ttl_s``; False per hold that lapsed, was granted to
        someone else since, or whose token is stale (its holder must stop writing under it)."""
        self._check_open()
        if not holds:
            return []
        _check_names(h.name for h in holds)
        return await self._renew_locks(holds, ttl_s, now)

    async def release_locks(
        self, holds: Sequence[LockHold], *, ttl_s: float, now: float
    ) -> list[str]:
        """Give held locks up (stale holds are ignored) and grant each freed lock to the
        waiters at the head of its queue, until ``now + ttl_s``. Returns the owners granted a
        lock by this call, for the caller to wake."""
        self._check_open()
        if not holds:
            return []
        _check_names(h.name for h in holds)
        return await self._release_locks(holds, ttl_s, now)

    async def withdraw_lock_requests(
        self, requests: Sequence[LockRequest], *, ttl_s: float, now: float
    ) -> list[str]:
        """Take requests out of their queues (a parked task was cancelled, an `app.lock` gave
        up waiting); a request granted since it was queued is given back as well, since its
        owner no longer wants it. What that frees is granted to the next waiters as a release
        does, until ``now + ttl_s``; returns the owners granted, for the caller to wake."""
        self._check_open()
        if not requests:
            return []
        _check_names(r.name for r in requests)
        return await self._withdraw_lock_requests(requests, ttl_s, now)

    async def lock_states(
        self, names: Sequence[str] | None = None, *, now: float
    ) -> list[LockState]:
        """The live holders and waiters of the named locks (None: of every lock), sorted by
        name; a lock with no live holder or waiter is left out. It grants nothing: a lapse it
        sees is granted by the next call that changes the lock."""
        self._check_open()
        if names is None:
            return await self._lock_states(None, now)
        chosen = sorted(set(names))
        _check_names(chosen)
        return await self._lock_states(chosen, now) if chosen else []

    @abstractmethod
    async def _acquire_locks(
        self, requests: Sequence[LockRequest], ttl_s: float, now: float
    ) -> list[int | None]:
        """See `acquire_locks`."""

    @abstractmethod
    async def _renew_locks(self, holds: Sequence[LockHold], ttl_s: float, now: float) -> list[bool]:
        """See `renew_locks`."""

    @abstractmethod
    async def _release_locks(
        self, holds: Sequence[LockHold], ttl_s: float, now: float
    ) -> list[str]:
        """See `release_locks`."""

    @abstractmethod
    async def _withdraw_lock_requests(
        self, requests: Sequence[LockRequest], ttl_s: float, now: float
    ) -> list[str]:
        """See `withdraw_lock_requests`."""

    @abstractmethod
    async def _lock_states(self, names: list[str] | None, now: float) -> list[LockState]:
        """See `lock_states`. `names` (None: every lock) are distinct, sorted and never empty."""

    # -- the worker registry (`QueueTasks.workers`, ``taskflow workers``) ------------------
    #
    # Rules: an entry lives until its `expires_at` (``now + ttl_s`` when written); a lapsed
    # entry is gone for every reader, and whichever call sees it first (a write or a read)
    # deletes it, so no sweeper is needed. Writing an id again replaces its entry.

    async def register_workers(
        self, entries: Sequence[WorkerInfo], *, ttl_s: float, now: float
    ) -> None:
        """Write (or replace) registry entries, each with ``heartbeat_at=now`` and
        ``expires_at=now + ttl_s``, in one round trip. A worker calls it with its heartbeat."""
        self._check_open()
        if not entries:
            return
        stamped = [
            msgspec.structs.replace(e, heartbeat_at=now, expires_at=now + ttl_s) for e in entries
        ]
        await self._register_workers(stamped, now)

    async def list_workers(self, *, now: float) -> list[WorkerInfo]:
        """Every live registry entry (``expires_at > now``), sorted by id."""
        self._check_open()
        return await self._list_workers(now)

    async def unregister_workers(self, worker_ids: Sequence[str]) -> None:
        """Delete registry entries at once (a worker that stops); unknown ids are ignored."""
        self._check_open()
        if worker_ids:
            await self._unregister_workers(list(worker_ids))

    @abstractmethod
    async def _register_workers(self, entries: list[WorkerInfo], now: float) -> None:
        """See `register_workers`: store each entry (already stamped with `heartbeat_at` and
        `expires_at`) under its id; may delete entries lapsed at `now`."""

    @abstractmethod
    async def _list_workers(self, now: float) -> list[WorkerInfo]:
        """See `list_workers`; deletes the entries lapsed at `now` it finds."""

    @abstractmethod
    async def _unregister_workers(self, worker_ids: list[str]) -> None:
        """See `unregister_workers`."""

    # -- durable key-value records (orders and their plans) --------------------------------

    async def kv_get(self, namespace: str, key: str) -> Versioned | None:
        """Read one record of the small durable key-value space."""
        self._check_open()
        return await self._kv_get(namespace, key)

    async def kv_set(
        self, namespace: str, key: str, value: bytes, *, expect_version: int | None = None
    ) -> int | None:
        """Write a record. With `expect_version` (0: must not exist yet) it is a
        compare-and-set. Returns the new version, or None if the expectation failed."""
        self._check_open()
        return await self._kv_set(namespace, key, value, expect_version)

    async def kv_list(self, namespace: str) -> dict[str, Versioned]:
        """Every record of a namespace."""
        self._check_open()
        return await self._kv_list(namespace)

    async def kv_delete(self, namespace: str, key: str) -> bool:
        """Delete a record; False if it did not exist."""
        self._check_open()
        return await self._kv_delete(namespace, key)

    @abstractmethod
    async def _kv_get(self, namespace: str, key: str) -> Versioned | None:
        """See `kv_get`."""

    @abstractmethod
    async def _kv_set(
        self, namespace: str, key: str, value: bytes, expect_version: int | None
    ) -> int | None:
        """See `kv_set`. Versions start at 1 and grow by 1 per write."""

    @abstractmethod
    async def _kv_list(self, namespace: str) -> dict[str, Versioned]:
        """See `kv_list`."""

    @abstractmethod
    async def _kv_delete(self, namespace: str, key: str) -> bool:
        """See `kv_delete`."""


def _check_names(names: Iterable[str]) -> None:
    for name in names:
        check_lock_name(name)
