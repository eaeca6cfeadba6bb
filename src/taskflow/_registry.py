"""`RegistryEntry`: a worker's entry in the backend's worker registry, written with its heartbeat.

A worker writes its `WorkerInfo` (id, host, pid, queues, concurrency, the roles its process
leads, its counters) through `Coordination.register_workers` when it starts and with each
heartbeat after (no loop of its own), and deletes it when it stops. An entry lives
`REGISTRY_TTL_LEASES` leases after its last write, so a worker that was killed drops out of
every reader's list on its own. What does not live here: the backends' storage of entries
(``Coordination``), the heartbeat itself (``_worker.py``), the listing (`QueueTasks.workers`).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Set
from typing import Final

from ._clock import Clock
from ._message import WorkerInfo
from .abc import Coordination

__all__ = ["REGISTRY_TTL_LEASES", "RegistryEntry"]

logger = logging.getLogger("taskflow.worker")

#: An entry lives this many leases after its last heartbeat: a few missed heartbeats (a third
#: of a lease apart by default) are tolerated, a dead worker is gone within two leases.
REGISTRY_TTL_LEASES: Final = 2.0


class RegistryEntry:
    """One worker's registry entry: what it says (built fresh by `snapshot` at each write),
    when it is written and when it is removed.

    Args:
        coordination: Where the registry is kept.
        clock: The app's clock.
        lease_s: The app's lease; the entry lives `REGISTRY_TTL_LEASES` of them.
        counters: Returns (processed, failed, running) now.
        roles: Returns the roles the app leads now (``app.leading``), read at each write.
    """

    def __init__(
        self,
        coordination: Coordination,
        clock: Clock,
        *,
        worker_id: str,
        queues: tuple[str, ...],
        concurrency: int,
        lease_s: float,
        counters: Callable[[], tuple[int, int, int]],
        roles: Callable[[], Set[str]],
    ) -> None:
        self._coordination = coordination
        self._clock = clock
        self._ttl_s = lease_s * REGISTRY_TTL_LEASES
        self._counters = counters
        self._roles = roles
        self._base = WorkerInfo(
            id=worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=queues,
            concurrency=concurrency,
            started_at=clock.time(),
        )
        self._written = False
        #: True while a write is in flight (the heartbeat starts none beside it).
        self.writing = False

    def snapshot(self) -> WorkerInfo:
        """The entry as it stands now (before the backend stamps its heartbeat and expiry)."""
        processed, failed, running = self._counters()
        base = self._base
        return WorkerInfo(
            id=base.id,
            host=base.host,
            pid=base.pid,
            queues=base.queues,
            concurrency=base.concurrency,
            started_at=base.started_at,
            roles=tuple(sorted(self._roles())),
            processed=processed,
            failed=failed,
            running=running,
        )

    async def write(self) -> None:
        """Write the entry (at start and with each heartbeat); a failure is logged, and the
        next heartbeat tries again: the registry is for people, never in the job path."""
        self.writing = True
        try:
            await self._coordination.register_workers(
                [self.snapshot()], ttl_s=self._ttl_s, now=self._clock.time()
            )
        except Exception as exc:  # one line: a flapping server must not flood the log
            logger.warning("could not update this worker's registry entry (%r); will retry", exc)
            return
        finally:
            self.writing = False
        self._written = True

    async def remove(self) -> None:
        """Delete the entry (a stop); if that fails it lapses on its own."""
        if not self._written or not self._coordination.is_open:
            return
        try:
            await self._coordination.unregister_workers([self._base.id])
        except Exception as exc:
            logger.warning("could not remove this worker's registry entry (%r); it will lapse", exc)
