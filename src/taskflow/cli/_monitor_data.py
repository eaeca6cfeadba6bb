"""What ``taskflow monitor`` shows, gathered in one place: the seam between the screen and the
backend.

`MonitorData` is the contract the screen reads through: a `Snapshot` (queues by state, the
leaders of named roles) read every second or so; the worker registry, read at the workers'
heartbeat cadence (no faster than its entries change); the error log (`QueueTasks.errors`),
read after the stream showed a failed attempt (and once per heartbeat, for one it missed); and
the event stream, followed push-driven, from which the screen counts throughput and the tasks
sent while each process led. `AppData` is the real one, over an app's broker, storage and
coordination; tests give the screen a fake. Nothing here imports Textual (that is
``_monitor_screen``), and nothing here starts processes (``_monitor_procs``).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import anyio

from .._app import QueueTasks
from .._message import Event, EventKind, FailedAttempt, LeaseInfo, QueueStats, WorkerInfo
from ..abc import LATEST

__all__ = [
    "DEFAULT_REFRESH_S",
    "AppData",
    "MonitorData",
    "Snapshot",
    "Throughput",
    "is_failure",
    "owner_pid",
]

#: How often the queues and the leaders are read again (one stats call, one lease read per
#: role). The worker registry is read at the workers' own heartbeat cadence instead.
DEFAULT_REFRESH_S: Final = 1.0

#: Event kinds that are a failed attempt (retried or for good).
FAILED_KINDS: Final = frozenset({EventKind.FAILED, EventKind.RETRYING})


@dataclass(frozen=True)
class Snapshot:
    """The queues and the leaders: what the screen reads every `MonitorData.refresh_s`."""

    queues: list[QueueStats] = field(default_factory=list)
    leaders: dict[str, LeaseInfo | None] = field(default_factory=dict)


class MonitorData(Protocol):
    """Where the monitor's figures come from (the real app, or a test's fake)."""

    refresh_s: float
    registry_s: float

    async def snapshot(self) -> Snapshot:
        """Queues and leaders as they are now (read every `refresh_s`)."""
        ...

    async def workers(self) -> list[WorkerInfo]:
        """The worker registry (read every `registry_s`, the workers' heartbeat)."""
        ...

    async def errors(self, limit: int) -> list[FailedAttempt]:
        """The latest `limit` failed attempts, newest first."""
        ...

    async def follow(self, on_event: Callable[[Event], None]) -> None:
        """Call `on_event` with every watched queue's events from now on, as they happen
        (push-driven), until cancelled."""
        ...


def owner_pid(owner: str) -> int | None:
    """The process id named by a lease owner of the form ``host:pid[:...]`` (None otherwise):
    the form of the owners `QueueTasks.leadership` makes when it is given none."""
    parts = owner.split(":")
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return None


def is_failure(event: Event) -> bool:
    """Whether an event records a failed attempt (retried or for good): the error log has a
    new entry to read."""
    return event.kind in FAILED_KINDS


class Throughput:
    """Tasks finished per second over a sliding window, counted from the event stream."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._ends: collections.deque[float] = collections.deque()
        self.total = 0

    def add(self, event: Event, now: float) -> None:
        """Count `event` if it ends a task (done, failed, cancelled, expired)."""
        if event.kind in (EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED, EventKind.EXPIRED):
            self._ends.append(now)
            self.total += 1

    def per_second(self, now: float) -> float:
        """Ends per second over the last `window_s` seconds before `now`."""
        while self._ends and self._ends[0] < now - self.window_s:
            self._ends.popleft()
        return len(self._ends) / self.window_s


class AppData:
    """`MonitorData` over an app's backend: broker stats, `QueueTasks.leader_of`, the event
    stream.

    Args:
        app: The app to watch (opened by the caller).
        queues: The queues to show and follow.
        roles: The named roles whose leaders to show.
        refresh_s: How often `snapshot` is meant to be read.

    Attributes:
        registry_s: How often `workers` is meant to be read: the app's ``heartbeat_s``, the
            cadence at which each worker rewrites its registry entry.
    """

    def __init__(
        self,
        app: QueueTasks,
        queues: Sequence[str],
        roles: Sequence[str],
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
    ) -> None:
        self.app = app
        self.queues = list(queues)
        self.roles = list(roles)
        self.refresh_s = refresh_s
        self.registry_s = app.config.heartbeat_s

    async def snapshot(self) -> Snapshot:
        now = self.app.clock.time()
        stats = await self.app.broker.stats(self.queues, now=now)
        leaders = {role: await self.app.leader_of(role) for role in self.roles}
        return Snapshot(queues=stats, leaders=leaders)

    async def workers(self) -> list[WorkerInfo]:
        return await self.app.workers()

    async def errors(self, limit: int) -> list[FailedAttempt]:
        return await self.app.errors(queues=self.queues, limit=limit)

    async def follow(self, on_event: Callable[[Event], None]) -> None:
        """Follow every watched queue's stream from its newest event on, one task each."""
        async with anyio.create_task_group() as tg:
            for queue in self.queues:
                tg.start_soon(self._follow_queue, queue, on_event)

    async def _follow_queue(self, queue: str, on_event: Callable[[Event], None]) -> None:
        async for event in self.app.storage.follow_events(queue, after=LATEST):
            on_event(event)


def monotonic() -> float:
    """The screen's clock for throughput windows (not the app's: a fake clock stands still)."""
    return time.monotonic()
