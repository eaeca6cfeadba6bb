"""`RedisStorage`: task records, results and events on Redis, and the connections to it.

Opens the client (``_client.py``), the lane script calls take on a single node (``_lane.py``)
and the shared pub/sub listener (``_listener.py``); runs the scripts (``_scripts.py``); reads
records with the ``get`` script, coalesced per loop turn, registering a result waiter's inbox in
the same step; routes what the listener hears: outcome pushes to the waiters (or the early
outcomes, ``_early.py``), other channels to their `listen` handler (the broker's work and
hand-off channels); reads events from each queue's stream.

The broker reaches this only through its public methods (`run_queue_script`, `routes`,
`fetch_raw`, `subscribe`, `listen`, `spawn`...). What does not live here: the message path
(``_broker.py``), leases and key-value records (``_coordination.py``), how values are packed
(``_codec.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Final

from .._backends import DEFAULT_APP, check_app_name, mask_password
from .._exceptions import AuthenticationFailed, BackendUnavailable, ConfigError
from .._ids import is_task_id
from .._message import (
    Checkpoint,
    Event,
    FailedAttempt,
    ProgressUpdate,
    TaskOutcome,
    TaskRecord,
    TaskStatus,
)
from ..abc import ReadCoalescer, Storage
from ._client import (
    AUTH_ERRORS,
    CONNECT_ERRORS,
    close_client,
    make_client,
    mask_secret,
    node_options,
    ping_once,
)
from ._codec import (
    NO_YIELDS,
    RawRecord,
    event_from,
    msgpack_encode,
    outcome_from,
    outcomes_pushed,
    progress_text,
    record_from,
    status_of,
    stream_cursor,
    time_arg,
)
from ._early import EarlyOutcomes
from ._errorlog import read_errors
from ._lane import Lane
from ._listener import Listener
from ._outbox import deliver_outboxes
from ._routing import QueueRoutes, group_by_queue
from ._scripts import Script, load_scripts

__all__ = ["RedisStorage"]

logger = logging.getLogger("taskflow.redis")

_EVENTS_BLOCK_MS: Final = 5_000

#: Script calls in flight per storage: bounded below the pool size (a cluster node's pool
#: raises when it runs out), so a burst of waiters queues here instead of failing.
_SCRIPTS_IN_FLIGHT: Final = 64

_READ_CHUNK: Final = 500

#: A read to coalesce: the task's id, its queue, and whether it is waited for (its waiter
#: registers in the same step).
_Read = tuple[str, str | None, bool]


@dataclasses.dataclass(frozen=True, slots=True)
class _Handler:
    """Where a channel's messages go (`RedisStorage.listen`)."""

    on_message: Callable[[bytes], None]
    on_resubscribed: Callable[[], None] | None


class RedisStorage(Storage):
    """Task records, results, events, leases and key-value records on Redis (or a cluster).

    Args:
        url: ``redis://host:port/db`` or ``rediss://...``; with `cluster`, any node's address.
        prefix: starts every key and channel; must not contain braces.
        app: The app's name, after the prefix (``<prefix>:<app>:``): apps with different names
            share nothing on the server.
        cluster: True for a Redis Cluster (``from_url`` sets it for ``redis+cluster://``).
        **client_options: passed to ``redis.asyncio.Redis.from_url`` / ``RedisCluster.from_url``.
    """

    scheme = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "taskflow",
        app: str = DEFAULT_APP,
        cluster: bool = False,
        **client_options: Any,
    ) -> None:
        super().__init__()
        if "{" in prefix or "}" in prefix:
            raise ConfigError(
                f"Redis key prefix {prefix!r} must not contain braces: they would replace the "
                "queue's hash tag; for example prefix='myapp'"
            )
        check_app_name(app)
        self.url = url
        self.cluster = cluster
        self.app = app
        #: What every key and channel of this storage starts with: ``<prefix>:<app>:``.
        self.prefix = f"{prefix}:{app}:"
        self._client_options = client_options
        self._pubcmd = "SPUBLISH" if cluster else "PUBLISH"
        #: Where queues' keys are and which queue each task id belongs to.
        self.routes = QueueRoutes(self.prefix, lambda: self._client)
        self._scripts: dict[str, Script] = load_scripts()
        self._client: Any = None
        #: The pipelined connection script calls take on a single node (None on a cluster,
        #: or when the lane cannot honour the connection options: then the client's pool).
        self._lane: Lane | None = None
        self._listener: Listener | None = None
        #: This storage's part of its inbox channels' names (see `inbox`).
        self._inbox_token = os.urandom(6).hex()
        #: Reads coalesced per loop turn (see `fetch_raw`): whole records, outcomes only.
        self._record_reads: ReadCoalescer[_Read, RawRecord | None] = ReadCoalescer(
            lambda reads: self._read_now(reads, outcome=False)
        )
        self._outcome_reads: ReadCoalescer[_Read, RawRecord | None] = ReadCoalescer(
            lambda reads: self._read_now(reads, outcome=True)
        )
        self._reset_session()

    def _reset_session(self) -> None:
        """Start afresh what lives as long as one open on one event loop: wake-ups and
        subscriptions' bookkeeping, background tasks, and the loop-bound semaphore."""
        #: Per channel other than inboxes: what its messages go to (`listen`).
        self._handlers: dict[str, _Handler] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._in_flight = asyncio.Semaphore(_SCRIPTS_IN_FLIGHT)
        self._record_reads.forget()
        self._outcome_reads.forget()
        #: Outcomes pushed before anyone waited, and the tasks created with an inbox
        #: registered (see `enqueue_inbox`). A new open subscribes anew, so what an earlier
        #: one registered cannot count on a push.
        self.early = EarlyOutcomes()

    # -- lifecycle -------------------------------------------------------------------------

    async def _open(self) -> None:
        self._reset_session()
        self._client = make_client(self.url, self.cluster, self._client_options)
        lane = None if self.cluster else Lane.for_pool(self._client.connection_pool)
        try:
            await ping_once(self._client)
            await self._load_scripts()
            if lane is not None:
                await lane.connect()
        except CONNECT_ERRORS as exc:
            if lane is not None:
                await lane.aclose()
            await close_client(self._client)
            raise self._connect_failure(exc) from exc
        self._lane = lane
        self._listener = Listener(
            self._client,
            sharded=self.cluster,
            node_options=node_options(self.url),
            on_message=self._on_message,
            on_resubscribed=self._on_resubscribed,
        )

    def _connect_failure(self, exc: BaseException) -> BackendUnavailable:
        """The error for a connection that `exc` stopped: a refused login is
        `AuthenticationFailed` (not retried: the server is there), anything else that the server
        cannot be reached. The URL
        is shown with its password masked, and the password is blotted out of the driver's text
        too, should it ever carry it."""
        what = mask_secret(f"{type(exc).__name__}: {exc}", self.url)
        if isinstance(exc, AUTH_ERRORS):
            return AuthenticationFailed(
                f"Redis at {self.describe()} refused the login ({what}): check the user name "
                "and password (redis://user:password@host:port/db)"
            )
        return BackendUnavailable(
            f"cannot reach Redis at {self.describe()} ({what}); is the server running and the "
            "URL right (redis://host:port/db)?"
        )

    def describe(self) -> str:
        scheme, _, rest = mask_password(self.url).partition("://")
        if self.cluster:
            scheme += "+cluster"
        return f"{scheme}://{rest} (key prefix {self.prefix[:-1]!r})"

    async def _load_scripts(self) -> None:
        for script in self._scripts.values():
            await self._client.script_load(script.source)

    async def _close(self) -> None:
        for task in list(self._background):
            task.cancel()
        self._record_reads.close()
        self._outcome_reads.close()
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._lane is not None:
            await self._lane.aclose()
            self._lane = None
        if self._client is not None:
            await close_client(self._client)
            self._client = None

    def _abandon(self) -> None:
        # The connections of the ended loop are dropped, not closed (that needs their loop).
        self._client = self._lane = self._listener = None

    @property
    def client(self) -> Any:
        """The ``redis.asyncio`` client (a cluster client on a cluster); None while closed."""
        return self._client

    async def run_script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run the standalone script `name` (``lua/<name>.lua``): on the lane on a single node,
        else on the client."""
        target = self._client if self._lane is None else self._lane
        try:
            return await self._scripts[name].run(target, keys, args)
        except AUTH_ERRORS as exc:  # a reconnect's login refused (the password changed)
            raise self._connect_failure(exc) from exc

    # -- keys and routing ------------------------------------------------------------------

    def qkey(self, queue: str, suffix: str) -> str:
        """The key ``<prefix>:{<queue>}:<suffix>`` (all of a queue's keys share its slot)."""
        return f"{self.prefix}{{{queue}}}:{suffix}"

    def _qargs(self, queue: str, now: float) -> list[Any]:
        return [self.prefix, queue, time_arg(now), str(self.events_maxlen), self._pubcmd]

    async def run_queue_script(self, name: str, queue: str, now: float, args: list[Any]) -> Any:
        """Run queue script `name` on `queue`'s slot with the prelude's arguments first."""
        keys = [self.qkey(queue, "ev")]
        script, qargs = self._scripts[name], self._qargs(queue, now)
        try:
            if self._lane is not None:  # one shared pipelined connection: nothing to bound
                return await script.run(self._lane, keys, qargs + args)
            async with self._in_flight:
                return await script.run(self._client, keys, qargs + args)
        except AUTH_ERRORS as exc:  # a reconnect's login refused (the password changed)
            raise self._connect_failure(exc) from exc

    # -- records ---------------------------------------------------------------------------

    async def fetch_raw(
        self, task_ids: Sequence[str], *, outcome: bool = False
    ) -> list[RawRecord | None]:
        """Each task's stored hash and yields (None if unknown): the `RECORD_FIELDS` values, or
        with `outcome` only the `OUTCOME_FIELDS` values (and no yields).

        A task with a result waiter in this process is read *and* registered for a push of its
        outcome to this storage's inbox on its queue, in one atomic step (the listener is
        subscribed to that inbox first), so a completion right after the read is not missed.
        Reads asked for in the same event-loop turn (a thousand result waiters starting at
        once) are coalesced into one script call per queue.
        """
        queues = await self.routes.resolve_queues(task_ids)
        watched = [
            q is not None and tid in self.waiters for tid, q in zip(task_ids, queues, strict=True)
        ]
        inboxes = {self.inbox(q) for q, w in zip(queues, watched, strict=True) if w and q}
        if inboxes:
            await self._require_listener().subscribe(inboxes)
        reads = self._outcome_reads if outcome else self._record_reads
        return await reads.read_many(list(zip(task_ids, queues, watched, strict=True)))

    async def _read_now(self, reads: list[_Read], *, outcome: bool) -> list[RawRecord | None]:
        """Read (and register) a coalesced batch: one ``get`` script call per queue (in chunks
        of `_READ_CHUNK` ids)."""
        task_ids = [task_id for task_id, _, _ in reads]
        queues = [queue for _, queue, _ in reads]
        watched = [w for _, _, w in reads]
        out: list[RawRecord | None] = [None] * len(task_ids)
        chunks: list[tuple[str, list[int]]] = []
        for queue, idx in group_by_queue(queues).items():
            # Waited ids first: the script registers the first "n watched" ids' waiters.
            idx.sort(key=lambda i: not watched[i])
            chunks += [
                (queue or "", idx[i : i + _READ_CHUNK]) for i in range(0, len(idx), _READ_CHUNK)
            ]
        calls = [
            self.run_queue_script(
                "get",
                queue,
                0.0,
                [
                    self.inbox(queue),
                    str(sum(watched[i] for i in idx)),
                    "outcome" if outcome else "record",
                    *(task_ids[i] for i in idx),
                ],
            )
            for queue, idx in chunks
        ]
        # One chunk (the usual case): no gather, no extra task.
        replies = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
        for (_, idx), reply in zip(chunks, replies, strict=True):
            if outcome:  # flat: OUTCOME_FIELDS per id, a false status for an unknown id
                for n, i in enumerate(idx):
                    values = reply[4 * n : 4 * n + 4]
                    if values[0] is not None:
                        out[i] = (values, NO_YIELDS)
                continue
            for i, found in zip(idx, reply, strict=True):
                if found:
                    out[i] = (found[0], found[1])
        return out

    async def _get_many(self, task_ids: Sequence[str], now: float) -> list[TaskRecord | None]:
        raws = await self.fetch_raw(task_ids)
        local_queue = self.routes.local_queue
        return [
            None if raw is None else record_from(tid, local_queue(tid) or "", *raw, now)
            for tid, raw in zip(task_ids, raws, strict=True)
        ]

    async def _get_outcomes(self, task_ids: Sequence[str], now: float) -> list[TaskOutcome | None]:
        if self.early:
            known = [self.early.known_outcome(task_id) for task_id in task_ids]
            unknown = [t for t, k in zip(task_ids, known, strict=True) if k is None]
            if not unknown:
                return known
            read = iter(await self._read_outcomes(unknown, now))
            return [k if k is not None else next(read) for k in known]
        return await self._read_outcomes(task_ids, now)

    async def _read_outcomes(self, task_ids: Sequence[str], now: float) -> list[TaskOutcome | None]:
        raws = await self.fetch_raw(task_ids, outcome=True)
        return [
            None if raw is None else outcome_from(task_id, raw[0], now)
            for task_id, raw in zip(task_ids, raws, strict=True)
        ]

    async def _report(self, updates: Sequence[ProgressUpdate], now: float) -> list[bool]:
        queues = await self.routes.resolve_queues([u.task_id for u in updates])
        out = [False] * len(updates)
        for queue, idx in group_by_queue(queues).items():
            args: list[Any] = [str(len(idx))]
            for i in idx:
                u = updates[i]
                prog = b"" if u.progress is None else msgpack_encode(u.progress)
                args += [u.task_id, str(u.token), prog, progress_text(u.progress)]
                args += [str(len(u.yields)), *u.yields]
            reply = await self.run_queue_script("report", queue, now, args)
            for i, ok in zip(idx, reply, strict=True):
                out[i] = bool(ok)
        return out

    # -- checkpoints -----------------------------------------------------------------------

    async def _save_checkpoints(self, entries: Sequence[Checkpoint], now: float) -> list[bool]:
        queues = await self.routes.resolve_queues([e.task_id for e in entries])
        out = [False] * len(entries)
        for queue, idx in group_by_queue(queues).items():
            args: list[Any] = [str(len(idx))]
            for i in idx:
                e = entries[i]
                args += [e.task_id, str(e.token), e.name, e.value]
            reply = await self.run_queue_script("checkpoint", queue, now, args)
            for i, ok in zip(idx, reply, strict=True):
                out[i] = bool(ok)
        return out

    def flow_queues_key(self, flow_id: str) -> str:
        """The set of the queues that hold tasks of flow `flow_id` (written before the tasks)."""
        return f"{self.prefix}flq:{{{flow_id}}}"

    async def _forget_flow_queue(self, flow_id: str, queue: str) -> None:
        """Take `queue` out of `flow_id`'s queue set, its index there emptied by cleanup; put
        it back if a task of the flow was enqueued there meanwhile (its enqueue added the
        queue first, then stored the task)."""
        key = self.flow_queues_key(flow_id)
        await self._client.srem(key, queue)
        if await self._client.exists(self.qkey(queue, f"fl:{flow_id}")):
            await self._client.sadd(key, queue)

    async def _flow_tasks(self, flow_id: str, now: float) -> list[TaskRecord]:
        queues = [q.decode() for q in await self._client.smembers(self.flow_queues_key(flow_id))]
        records: list[TaskRecord] = []
        for queue in sorted(queues):
            index = self.qkey(queue, f"fl:{flow_id}")
            ids = [i.decode() for i in await self._client.zrange(index, 0, -1)]
            for task_id in ids:
                if not is_task_id(task_id):
                    self.routes.remember_queue(task_id, queue)
            found = await self.get_many(ids, now=now)
            gone = [i for i, r in zip(ids, found, strict=True) if r is None]
            if gone:  # records deleted by cleanup: forget them in the index too
                await self._client.zrem(index, *gone)
            records += [r for r in found if r is not None]
        records.sort(key=lambda r: (r.created_at, r.id))
        return records

    async def _checkpoints(self, task_id: str) -> dict[str, bytes]:
        (queue,) = await self.routes.resolve_queues([task_id])
        if queue is None:
            return {}
        stored = await self._client.hgetall(self.qkey(queue, f"c:{task_id}"))
        return {name.decode(): value for name, value in stored.items()}

    # -- notifications ---------------------------------------------------------------------

    def _require_listener(self) -> Listener:
        if self._listener is None:
            raise BackendUnavailable("RedisStorage is not connected; open it first")
        return self._listener

    async def _ensure_listening(self) -> None:
        # The listener subscribes lazily: `fetch_raw` subscribes to this storage's inbox on the
        # queue of every waited task before it reads (and registers) the state.
        self._require_listener()

    def inbox(self, queue: str) -> str:
        """This storage's inbox channel on `queue`: terminal writes push the outcomes of tasks
        it waits for there, one message per script call (``push_later`` in lua/common.lua)."""
        return self.qkey(queue, f"inbox:{self._inbox_token}")

    def _on_message(self, channel: str, data: bytes) -> None:
        handler = self._handlers.get(channel)
        if handler is not None:
            handler.on_message(data)
        elif ":inbox:" in channel:
            for task_id, values in outcomes_pushed(data):
                if values is None:  # ended, but too large to push: waiters read it
                    self.early.forget(task_id)
                    self.waiters.wake(task_id)
                elif task_id in self.waiters:
                    # It just ended, so its result has not expired (now=-inf).
                    self.waiters.wake(task_id, outcome_from(task_id, values, float("-inf")))
                else:
                    # Kept for a later result(): a task created with this inbox registered
                    # can end before its enqueue's reply is even processed (see enqueue_inbox).
                    self.early.put(task_id, values)

    def _on_resubscribed(self, channel: str) -> None:
        handler = self._handlers.get(channel)
        if handler is not None:
            if handler.on_resubscribed is not None:
                handler.on_resubscribed()
            return
        # Registrations made before cannot count on their push any more (see enqueue_inbox).
        self.early.resubscribed(channel)
        # Outcomes pushed while we were disconnected were lost: re-read the waited ids.
        waited = [tid for tid in self.waiters.task_ids() if self._inbox_of(tid) == channel]
        if waited:
            self.spawn(self._recheck(waited))

    def _inbox_of(self, task_id: str) -> str | None:
        queue = self.routes.local_queue(task_id)
        return None if queue is None else self.inbox(queue)

    async def _recheck(self, task_ids: list[str]) -> None:
        try:
            raws = await self.fetch_raw(task_ids)
        except Exception:
            logger.exception("re-reading waited tasks after a Redis reconnect failed")
            return
        for task_id, raw in zip(task_ids, raws, strict=True):
            status = None if raw is None else status_of(raw[0])
            if status is not None and TaskStatus(status.decode()).terminal:
                self.waiters.wake(task_id)

    # -- the surface the broker uses --------------------------------------------------------

    @property
    def pipelined(self) -> bool:
        """True if script calls share one ordered connection (the lane, single node only): calls
        made one after another run on the server in that order."""
        return self._lane is not None

    def enqueue_inbox(self, queue: str) -> str:
        """The inbox an enqueue on `queue` registers on the tasks it creates, or "".

        Once this process waits for results on a queue (its inbox there is subscribed), the
        tasks it sends there carry the inbox from the start, as a waiter's read would add it:
        their outcome is pushed here however soon it comes, so `result()` needs no read. Not
        subscribed (a producer that never waits): nothing is registered and nothing pushed.
        """
        inbox = self.inbox(queue)
        return inbox if self.is_subscribed(inbox) else ""

    def is_subscribed(self, channel: str) -> bool:
        """True once the server confirmed this process's subscription to `channel`."""
        listener = self._listener
        return listener is not None and listener.is_subscribed(channel)

    async def subscribe(self, channels: Iterable[str]) -> None:
        """Subscribe the listener to `channels`; returns once the server confirmed each."""
        await self._require_listener().subscribe(channels)

    def listen(
        self,
        channel: str,
        on_message: Callable[[bytes], None],
        on_resubscribed: Callable[[], None] | None = None,
    ) -> None:
        """Hand `channel`'s messages to `on_message` (replacing what was there), and call
        `on_resubscribed` when its subscription was renewed after a lost connection (messages
        may have been missed). `subscribe` subscribes; this only routes."""
        self._handlers[channel] = _Handler(on_message, on_resubscribed)

    def unlisten(self, channel: str) -> None:
        """Stop routing `channel`'s messages (see `listen`)."""
        self._handlers.pop(channel, None)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background until it ends or the storage closes."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- events ----------------------------------------------------------------------------

    async def _read_events(self, queue: str, after: str | None, limit: int) -> list[Event]:
        start = "-" if after is None else f"({stream_cursor(after)}"
        entries = await self._client.xrange(self.qkey(queue, "ev"), start, "+", count=limit)
        return [event_from(queue, entry_id, fields) for entry_id, fields in entries]

    async def _latest_cursor(self, queue: str) -> str | None:
        newest = await self._client.xrevrange(self.qkey(queue, "ev"), "+", "-", count=1)
        return newest[0][0].decode() if newest else None

    async def _wait_events(self, queue: str, after: str | None) -> None:
        await self._client.xread(
            {self.qkey(queue, "ev"): stream_cursor(after or "0-0")},
            count=1,
            block=_EVENTS_BLOCK_MS,
        )

    # -- the error log (written by ``lua/complete.lua``) -------------------------------------

    async def _errors(
        self, since: float | None, name: str | None, queues: list[str] | None, limit: int
    ) -> list[FailedAttempt]:
        if queues is None:
            members = await self._client.smembers(f"{self.prefix}queues")
            queues = sorted(q.decode() for q in members)
        streams = {queue: self.qkey(queue, "errors") for queue in queues}
        return await read_errors(self._client, streams, since, name, limit)

    # -- maintenance -----------------------------------------------------------------------

    async def _cleanup(self, now: float, keep_s: float) -> int:
        queues = [q.decode() for q in await self._client.smembers(f"{self.prefix}queues")]
        # What a crash between a call and its delivery left in the outboxes (``_outbox.py``).
        await deliver_outboxes(self, queues, now, now + keep_s)
        deleted = 0
        for queue in queues:
            reply = await self.run_queue_script("cleanup", queue, now, [time_arg(now - keep_s)])
            ids, emptied = _deleted_and_emptied(reply)
            for flow_id in emptied:  # no task of the flow is left in this queue
                await self._forget_flow_queue(flow_id, queue)
            deleted += len(ids)
            indexed = [i.decode() for i in ids if not is_task_id(i.decode())]
            for task_id in indexed:
                await self._client.delete(f"{self.prefix}ix:{task_id}")
                self.routes.forget_id(task_id)
        return deleted


def _deleted_and_emptied(reply: list[Any]) -> tuple[list[bytes], list[str]]:
    """The ``cleanup`` script's reply: the ids it deleted, and the flows whose index in the
    queue it emptied."""
    if reply and isinstance(reply[-1], list):
        return reply[:-1], [flow.decode() for flow in reply[-1]]
    return reply, []
