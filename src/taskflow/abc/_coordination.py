"""The `Coordination` contract: named leases with fencing tokens, and a versioned key-value space.

What processes of one deployment agree on, apart from tasks: who leads (the orders'
`Supervisor` holds a lease), and the small durable records orders and plans are kept in,
written with compare-and-set. The locks, elections, worker registry and rate limits of later
issues grow here, so they never widen `Storage`. What does not live here: task records
(`Storage`) and messages (`Broker`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from .._message import LeaseInfo, Versioned
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
