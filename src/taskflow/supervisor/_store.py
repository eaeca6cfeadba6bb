"""Where orders live: the coordination's durable key-value records, written with compare-and-set.

Layout (namespaces of `Coordination.kv_*`, the same on every backend):

* ``taskflow:orders``              order id -> `OrderRecord`
* ``taskflow:orders-active``       order id -> b"" for orders not yet final and notified
* ``taskflow:order-jobs:<id>``     job key (the day, ISO) -> `JobRecord`
* ``taskflow:order-log:<id>``      zero-padded sequence -> `OrderEvent`
* ``taskflow:supervisor``          ``changes`` -> a counter bumped by submit / cancel / amend,
  so the leader notices work that arrived through another process

Every update is a read-modify-write retried on a version conflict, so two writers (a client
cancelling, the leader rolling up) never lose each other's change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from ..abc import Coordination
from ._model import (
    JobRecord,
    OrderEvent,
    OrderRecord,
    decode_event,
    decode_job,
    decode_order,
    encode,
)

__all__ = ["OrderStore"]

logger = logging.getLogger("taskflow.supervisor")

ORDERS_NS: Final = "taskflow:orders"
ACTIVE_NS: Final = "taskflow:orders-active"
META_NS: Final = "taskflow:supervisor"
CHANGES_KEY: Final = "changes"
_CURSOR_WIDTH: Final = 10


def jobs_ns(order_id: str) -> str:
    """The namespace of an order's jobs."""
    return f"taskflow:order-jobs:{order_id}"


def log_ns(order_id: str) -> str:
    """The namespace of an order's event log."""
    return f"taskflow:order-log:{order_id}"


class OrderStore:
    """Typed, compare-and-set access to the orders' records in a `Coordination`."""

    def __init__(self, coordination: Coordination) -> None:
        self.coordination = coordination
        self._next_seq: dict[str, int] = {}

    # -- orders ----------------------------------------------------------------------------

    async def create(self, record: OrderRecord, jobs: list[JobRecord]) -> bool:
        """Store a new order and its jobs; False (nothing changed) if the id exists."""
        if await self.coordination.kv_get(ORDERS_NS, record.id) is not None:
            return False
        for job in jobs:
            await self.coordination.kv_set(
                jobs_ns(record.id), job.key, encode(job), expect_version=0
            )
        created = await self.coordination.kv_set(
            ORDERS_NS, record.id, encode(record), expect_version=0
        )
        if created is None:
            return False
        await self.coordination.kv_set(ACTIVE_NS, record.id, b"")
        return True

    async def order(self, order_id: str) -> OrderRecord | None:
        """The order's record, or None."""
        stored = await self.coordination.kv_get(ORDERS_NS, order_id)
        return None if stored is None else decode_order(stored.value)

    async def update_order(
        self, order_id: str, change: Callable[[OrderRecord], bool]
    ) -> OrderRecord | None:
        """Apply `change` (which edits the record and returns True to write it) under
        compare-and-set, retrying on conflicts. Returns the record as it now stands."""
        while True:
            stored = await self.coordination.kv_get(ORDERS_NS, order_id)
            if stored is None:
                return None
            record = decode_order(stored.value)
            if not change(record):
                return record
            written = await self.coordination.kv_set(
                ORDERS_NS, order_id, encode(record), expect_version=stored.version
            )
            if written is not None:
                return record

    async def active_ids(self) -> list[str]:
        """Ids of orders not yet final and notified."""
        return sorted(await self.coordination.kv_list(ACTIVE_NS))

    async def deactivate(self, order_id: str) -> None:
        """Take a final, notified order off the active list."""
        await self.coordination.kv_delete(ACTIVE_NS, order_id)

    # -- jobs ------------------------------------------------------------------------------

    async def jobs(self, order_id: str) -> dict[str, tuple[JobRecord, int]]:
        """Every job of an order with its version, by key."""
        stored = await self.coordination.kv_list(jobs_ns(order_id))
        return {key: (decode_job(v.value), v.version) for key, v in sorted(stored.items())}

    async def update_job(
        self, order_id: str, key: str, change: Callable[[JobRecord], bool]
    ) -> JobRecord | None:
        """Like `update_order`, for one job."""
        namespace = jobs_ns(order_id)
        while True:
            stored = await self.coordination.kv_get(namespace, key)
            if stored is None:
                return None
            job = decode_job(stored.value)
            if not change(job):
                return job
            written = await self.coordination.kv_set(
                namespace, key, encode(job), expect_version=stored.version
            )
            if written is not None:
                return job

    async def put_job(self, job: JobRecord, *, expect_version: int) -> bool:
        """Write a job if its version is still `expect_version` (0: new)."""
        written = await self.coordination.kv_set(
            jobs_ns(job.order_id), job.key, encode(job), expect_version=expect_version
        )
        return written is not None

    # -- the event log ---------------------------------------------------------------------

    async def append(self, event: OrderEvent) -> OrderEvent:
        """Append `event` to its order's log (its cursor is assigned here) and return it."""
        namespace = log_ns(event.order_id)
        seq = self._next_seq.get(event.order_id)
        if seq is None:
            seq = await self._tail(namespace)
        while True:
            cursor = f"{seq:0{_CURSOR_WIDTH}d}"
            stamped = OrderEvent(
                cursor=cursor,
                order_id=event.order_id,
                kind=event.kind,
                at=event.at,
                job=event.job,
                unit=event.unit,
                detail=event.detail,
            )
            if await self.coordination.kv_set(namespace, cursor, encode(stamped), expect_version=0):
                self._next_seq[event.order_id] = seq + 1
                return stamped
            seq = await self._tail(namespace)  # another process appended meanwhile

    async def _tail(self, namespace: str) -> int:
        """The next free sequence number of a log."""
        keys = await self.coordination.kv_list(namespace)
        return max((int(k) for k in keys), default=0) + 1

    async def events(self, order_id: str, after: str | None) -> list[OrderEvent]:
        """The order's logged events after cursor `after`, oldest first."""
        stored = await self.coordination.kv_list(log_ns(order_id))
        return [
            decode_event(v.value)
            for key, v in sorted(stored.items())
            if after is None or key > after
        ]

    # -- the change counter ----------------------------------------------------------------

    async def bump_changes(self) -> None:
        """Tell the leader (in any process) that orders changed."""
        while True:
            stored = await self.coordination.kv_get(META_NS, CHANGES_KEY)
            version = 0 if stored is None else stored.version
            if await self.coordination.kv_set(META_NS, CHANGES_KEY, b"", expect_version=version):
                return

    async def changes(self) -> int:
        """The change counter (its version)."""
        stored = await self.coordination.kv_get(META_NS, CHANGES_KEY)
        return 0 if stored is None else stored.version
