"""The `Storage` contract: what is known about tasks (records, results, progress, events).

A storage keeps each task's record, wakes the result waiters of this process when a task ends
(`Storage.waiters`, a `ResultWaiters`), keeps each queue's capped event stream and drops what
outlived its TTL. What does not live here: moving messages (`Broker`, which writes the records
it changes through the same server) and leases or key-value records (`Coordination`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Final

from .._message import Checkpoint, Event, FailedAttempt, ProgressUpdate, TaskOutcome, TaskRecord
from ._lifecycle import Lifecycle
from ._waiters import ResultWaiters

__all__ = ["LATEST", "Storage"]

LATEST: Final = "$"
"""The event cursor "now": `Storage.follow_events` given ``after=LATEST`` starts after the
queue's newest event when its iteration starts, so it yields only what happens from then on
instead of replaying the stream (`Storage.read_events` returns nothing for it). Every event it
yields has a real cursor, to resume from without losing an event. ``"$"``, as Redis's
``XREAD`` spells "only new entries"; no backend's cursor can take that value."""


class Storage(Lifecycle, ABC):
    """What is known about tasks: records, results, progress, events; result waiters.

    Subclasses implement the ``_hooks``. A backend wakes `waiters` whenever it learns that a
    task reached a terminal state (from its own writes, or from its push channel: pub/sub,
    LISTEN/NOTIFY); `wait` does the rest.
    """

    #: True if the backend can be shared by several OS processes (False for memory).
    shared_across_processes: bool = True
    #: URL scheme(s) of this backend, for messages.
    scheme: str = ""

    def __init__(self) -> None:
        self.waiters = ResultWaiters()
        """The result waiters of this process: the backend wakes them (`ResultWaiters.wake`)
        whenever it learns that a task ended."""
        self.events_maxlen: int = 100_000
        """Approximate number of events kept per queue (set from `GlobalConfig.events_maxlen`)."""
        self.errors_maxlen: int = 10_000
        """Approximate number of failed attempts kept per queue in the error log (set from
        `GlobalConfig.errors_maxlen`); older ones are dropped as new ones come."""

    # -- lifecycle -------------------------------------------------------------------------

    async def _opening(self) -> None:
        # Waiters of an earlier open belong to its event loop: dropped, never touched.
        self.waiters.forget()
        await self._open()

    async def _closing(self) -> None:
        self.waiters.close()  # pending waits end (cancelled) before the connections go
        await self._close()

    def _abandoning(self) -> None:
        self.waiters.forget()
        self._abandon()

    def describe(self) -> str:
        """Where this storage keeps its tasks, for logs and messages: the server's URL with any
        password masked, and what scopes it there (a key prefix, a schema)."""
        return f"{self.scheme}://"

    # -- records ---------------------------------------------------------------------------

    async def get(self, task_id: str, *, now: float) -> TaskRecord | None:
        """Return the task's record, or None if the id is unknown.

        After the result TTL the record is still returned, with ``result_expired=True`` and no
        result.
        """
        self._check_open()
        return (await self._get_many([task_id], now))[0]

    async def get_many(self, task_ids: Sequence[str], *, now: float) -> list[TaskRecord | None]:
        """`get` for many ids in one round trip, in order."""
        self._check_open()
        return await self._get_many(task_ids, now)

    async def report(self, updates: Sequence[ProgressUpdate], *, now: float) -> list[bool]:
        """Store progress and yielded values of running tasks; per update, False if its token is
        stale or the task is no longer running (nothing is written then)."""
        self._check_open()
        if not updates:
            return []
        return await self._report(updates, now)

    async def save_checkpoints(self, entries: Sequence[Checkpoint], *, now: float) -> list[bool]:
        """Record named checkpoint values of running tasks, in order, in one round trip; per
        entry, False if its token is not the task's current one or the task is not running
        (nothing is written then).

        A name saved again replaces its value (later entries of one batch win). Checkpoints
        survive every later claim, retry and release of the task (unlike progress) and are
        deleted with its record; `checkpoints` reads them back. ``ctx.chunks`` keeps its
        position in one, and a step recorded once its block exits would be one too.
        """
        self._check_open()
        if not entries:
            return []
        return await self._save_checkpoints(entries, now)

    async def checkpoints(self, task_id: str) -> dict[str, bytes]:
        """The checkpoint values saved for `task_id` by any of its runs, by name; empty if it
        has none or the task is unknown."""
        self._check_open()
        return await self._checkpoints(task_id)

    async def wait(self, task_id: str, *, timeout: float | None, now: float) -> TaskOutcome:
        """Wait until the task is terminal and return how it ended (what `AsyncResult.result`
        needs); push-notified, never polled. A caller that needs the whole record reads it
        with `get` afterwards.

        The waiter is registered *before* the stored state is read, so a task finishing in
        between is not missed.

        Raises:
            TaskNotFound: the id is unknown.
            TimeoutError: (builtin) not terminal within `timeout` seconds.
        """
        self._check_open()
        known = self._outcome_at_hand(task_id, now)
        if known is not None:  # ended, and known here without a read: no waiter needed
            return known
        await self._ensure_listening()
        return await self.waiters.wait(
            task_id, lambda: self._read_outcome(task_id, now), timeout=timeout
        )

    async def _read_outcome(self, task_id: str, now: float) -> TaskOutcome | None:
        return (await self._get_outcomes((task_id,), now))[0]

    def local_workers(self, queue: str) -> int | None:
        """How many workers claim from `queue` right now, for a backend whose tasks only
        workers of this process can run (`shared_across_processes` False); None where workers
        elsewhere may run them (the default). `result()` uses it to say that no worker is
        running, rather than to keep waiting."""
        return None

    def _outcome_at_hand(self, task_id: str, now: float) -> TaskOutcome | None:
        """Hook: how `task_id` ended, if this process knows it without a read (no I/O, no
        await), else None (the default). Only a terminal outcome may be returned; `wait`
        returns it at once, without registering a waiter. An in-process backend answers from
        its own state: most results are awaited after their task ended, and a registered
        waiter (a future, a timeout) costs more than that lookup."""
        return None

    async def _ensure_listening(self) -> None:
        """Hook: make sure this process's push channel runs before a waiter reads (so an end
        written after the read is heard). Default: nothing."""

    @abstractmethod
    async def _get_many(self, task_ids: Sequence[str], now: float) -> list[TaskRecord | None]:
        """Return each task's record or None; hide the result once `result_expires_at <= now`."""

    async def _get_outcomes(self, task_ids: Sequence[str], now: float) -> list[TaskOutcome | None]:
        """Hook: each task's `TaskOutcome` or None, as `_get_many` (which the default calls);
        backends override it to read less. `wait` reads through it, one id per waiter: a
        backend whose reads cost a round trip coalesces them (`ReadCoalescer`)."""
        records = await self._get_many(task_ids, now)
        return [None if r is None else TaskOutcome.of(r) for r in records]

    @abstractmethod
    async def _report(self, updates: Sequence[ProgressUpdate], now: float) -> list[bool]:
        """Apply progress/yields of RUNNING tasks whose token matches; emit PROGRESS/YIELDED
        events. Return per update whether it was applied."""

    @abstractmethod
    async def _save_checkpoints(self, entries: Sequence[Checkpoint], now: float) -> list[bool]:
        """See `save_checkpoints`: apply each entry (in order) whose task is RUNNING under its
        token; keep the values where the task's record goes, so that deleting the record (cleanup,
        expiry) deletes them too. No event is emitted."""

    @abstractmethod
    async def _checkpoints(self, task_id: str) -> dict[str, bytes]:
        """See `checkpoints`."""

    # -- flows -----------------------------------------------------------------------------

    async def flow_tasks(self, flow_id: str, *, now: float) -> list[TaskRecord]:
        """Every task whose message named `flow_id` (`TaskMessage.flow_id`) and whose record
        is still kept, oldest first (by `created_at`, then id): the nodes of a flow, the shards
        and joins of its fan-outs and its hedge copies. Unknown flow: an empty list."""
        self._check_open()
        return await self._flow_tasks(flow_id, now)

    @abstractmethod
    async def _flow_tasks(self, flow_id: str, now: float) -> list[TaskRecord]:
        """See `flow_tasks`."""

    # -- events ----------------------------------------------------------------------------

    async def read_events(
        self, queue: str, *, after: str | None = None, limit: int = 1000
    ) -> list[Event]:
        """Read a queue's events in order, starting right after cursor `after` (None: the
        oldest kept; `LATEST`: none, nothing is newer than the newest). The stream is capped
        (`GlobalConfig.events_maxlen`); a cursor older than the oldest kept event resumes at
        the oldest kept event.

        Raises:
            ValueError: `after` is not a cursor of this backend.
        """
        self._check_open()
        if after == LATEST:
            return []
        return await self._read_events(queue, after, limit)

    async def follow_events(
        self, queue: str, *, after: str | None = None, batch: int = 1000
    ) -> AsyncIterator[Event]:
        """Yield a queue's events as they happen, forever, resuming after cursor `after`
        (None: from the oldest kept; `LATEST`: only events after the newest one when the
        iteration starts). Push-driven; reads up to `batch` events at a time.

        Raises:
            ValueError: `after` is not a cursor of this backend.
        """
        self._check_open()
        cursor = await self._latest_cursor(queue) if after == LATEST else after
        while True:
            events = await self._read_events(queue, cursor, batch)
            for event in events:
                cursor = event.cursor
                yield event
            if not events:
                await self._wait_events(queue, cursor)

    async def latest_cursor(self, queue: str) -> str | None:
        """The cursor of `queue`'s newest event now (None if it has none): what `LATEST`
        stands for at this moment. Reading or following after it yields only events appended
        later; a page that shows "from now on" keeps it to resume from without a gap."""
        self._check_open()
        return await self._latest_cursor(queue)

    @abstractmethod
    async def _read_events(self, queue: str, after: str | None, limit: int) -> list[Event]:
        """Return up to `limit` events of `queue` after cursor `after`, oldest first."""

    @abstractmethod
    async def _wait_events(self, queue: str, after: str | None) -> None:
        """Return when events after cursor `after` may exist (push; spurious returns allowed)."""

    @abstractmethod
    async def _latest_cursor(self, queue: str) -> str | None:
        """The cursor of `queue`'s newest event, or None if it has none (what `LATEST`
        stands for): reading after it returns only events appended later."""

    # -- the error log ---------------------------------------------------------------------

    async def errors(
        self,
        *,
        since: float | None = None,
        name: str | None = None,
        queues: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[FailedAttempt]:
        """The newest failed attempts first, at most `limit`: each RETRY or FAILED outcome
        with an error that `Broker.complete` stored, kept in a capped log per queue
        (`errors_maxlen`). Only those at or after `since` (None: any), of the task named
        `name` (None: any), in `queues` (None: every queue with a log).

        Raises:
            ValueError: `limit` is below 1.
        """
        self._check_open()
        if limit < 1:
            raise ValueError(f"limit={limit!r} must be >= 1")
        chosen = None if queues is None else sorted(set(queues))
        return await self._errors(since, name, chosen, limit)

    @abstractmethod
    async def _errors(
        self, since: float | None, name: str | None, queues: list[str] | None, limit: int
    ) -> list[FailedAttempt]:
        """See `errors`: newest first (by `at`), filtered, at most `limit`."""

    # -- maintenance -----------------------------------------------------------------------

    async def cleanup(self, *, now: float, keep_s: float) -> int:
        """Delete records whose result expired more than `keep_s` seconds before `now`, and
        dedup keys past their TTL. Returns how many records were deleted."""
        self._check_open()
        return await self._cleanup(now, keep_s)

    @abstractmethod
    async def _cleanup(self, now: float, keep_s: float) -> int:
        """See `cleanup`."""
