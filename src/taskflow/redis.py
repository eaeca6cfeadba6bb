"""The Redis backend: `RedisStorage`, `RedisBroker`, `RedisCoordination` on ``redis.asyncio``.

`from_url` builds both from ``redis://``, ``rediss://`` or ``redis+cluster://host:port``
(``rediss+cluster://`` for TLS). Every state change is one Lua script (``taskflow/_redis/lua``),
run with EVALSHA, one call per queue per batch; the script also appends the event to the
queue's capped stream and publishes the notification, so there is never a round trip per task
for either. Every key of an app's queue starts with ``<prefix>:<app>:{<queue>}:`` (the app's
name namespaces its keys and channels; the queue is the hash tag, so a queue's keys share one
slot of a Redis Cluster). Task ids end with a code of their queue (``taskflow._ids``), which
routes an id to its queue's keys through the ``codes`` hash (code -> queue, read once per code
per process); ids chosen by users are routed through a small id -> queue index written at
enqueue. The data layout and its reasons are in ``docs/backends/redis.md``.

What does not live here: the scripts (``_redis/lua``), their loader (``_redis/scripts.py``),
the shared pub/sub listener (``_redis/listener.py``) and the pipelined connection script calls
take on a single node (``_redis/lane.py``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import msgspec

from ._backends import DEFAULT_APP, check_app_name, mask_password, missing_driver
from ._exceptions import BackendUnavailable, ConfigError
from ._ids import CODE_LENGTH, TASK_ID_LENGTH, is_task_id, queue_code
from ._message import (
    LEASE_EXPIRED,
    CancelResult,
    Delivery,
    EnqueueResult,
    ErrorInfo,
    Event,
    EventKind,
    Lease,
    LeaseInfo,
    LeaseState,
    Outcome,
    OutcomeKind,
    Progress,
    ProgressUpdate,
    QueueStats,
    TaskMessage,
    TaskOutcome,
    TaskRecord,
    TaskStatus,
    Versioned,
    decode_message,
    encode_message,
)
from .abc import Broker, Coordination, ReadCoalescer, Storage

try:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisClusterUnreachableError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_driver("taskflow.redis") from exc

from ._redis.lane import Lane
from ._redis.listener import Listener
from ._redis.scripts import Script, load_scripts

__all__ = ["RedisBroker", "RedisCoordination", "RedisStorage", "from_url"]

logger = logging.getLogger("taskflow.redis")

_SCHEMES: Final = {
    "redis": ("redis", False),
    "rediss": ("rediss", False),
    "redis+cluster": ("redis", True),
    "rediss+cluster": ("rediss", True),
}
_LEASE_EXPIRED: Final = msgspec.msgpack.encode(LEASE_EXPIRED)
_CANCEL_CODES: Final = {
    b"cancelled": CancelResult.CANCELLED,
    b"requested": CancelResult.REQUESTED,
    b"already_terminal": CancelResult.ALREADY_TERMINAL,
    b"not_found": CancelResult.NOT_FOUND,
}
_LEASE_CODES: Final = {0: LeaseState.LOST, 1: LeaseState.OK, 2: LeaseState.CANCEL}
_EVENTS_BLOCK_MS: Final = 5_000
_MAX_CONNECTIONS: Final = 100
_POOL_WAIT_S: Final = 30.0
#: Script calls in flight per storage: bounded below the pool size (a cluster node's pool
#: raises when it runs out), so a burst of waiters queues here instead of failing.
_SCRIPTS_IN_FLIGHT: Final = 64
_ID_CACHE_MAX: Final = 100_000
_READ_CHUNK: Final = 500
#: Messages per enqueue script call when a batch is sent in pipelined chunks: the first
#: chunk, and each after it.
_ENQUEUE_FIRST: Final = 100
_ENQUEUE_CHUNK: Final = 250
#: Most tasks one call of the ``purge`` script ends (the server runs nothing else meanwhile).
_PURGE_CHUNK: Final = 500
#: Most tasks remembered as registered at enqueue, and most early outcomes kept, per storage.
_REGISTERED_MAX: Final = 50_000
#: Most bytes of results and errors held in early outcomes, per storage.
_EARLY_BYTES_MAX: Final = 32 * 1024 * 1024
#: A stored task as read: its hash fields and its yielded values.
_Raw = tuple[list[bytes | None], list[bytes]]
#: The hash fields the ``get`` script reads, in the order of a `_Raw`'s first element.
RECORD_FIELDS: Final = (
    "msg", "st", "att", "sa", "fa", "res", "err", "prog", "cr", "rx", "tok", "wid", "w", "y"
)  # fmt: skip
#: What the ``get`` script reads for `Storage.wait`, in this order.
OUTCOME_FIELDS: Final = ("st", "res", "err", "rx")
_OUTCOME_KEYS: Final = tuple(name.encode() for name in OUTCOME_FIELDS)
_NO_YIELDS: Final[list[bytes]] = []
_MSG, _ST, _ATT, _SA, _FA, _RES, _ERR, _PROG, _CR, _RX, _TOK, _WID = range(12)
#: A read to coalesce: the task's id, its queue, and whether it is waited for (its waiter
#: registers in the same step).
_Read = tuple[str, str | None, bool]
_error_decoder: Final = msgspec.msgpack.Decoder(ErrorInfo)
_msgpack_encode: Final = msgspec.msgpack.Encoder().encode
_progress_decoder: Final = msgspec.msgpack.Decoder(Progress)


def _t(value: float) -> str:
    """A time as exact text for the scripts (repr round-trips a float)."""
    return repr(float(value))


def _opt_t(value: float | None) -> str:
    return "" if value is None else _t(value)


def _opt_float(raw: bytes | None) -> float | None:
    return None if raw is None or raw == b"" else float(raw)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None or raw == b"" else raw.decode()


def check_queue_name(queue: str) -> None:
    """Raise `ConfigError` if `queue` cannot be a Redis hash tag (braces, or empty)."""
    if not queue or "{" in queue or "}" in queue:
        raise ConfigError(
            f"queue name {queue!r} cannot be used with the Redis backend: it becomes the hash "
            "tag of the queue's keys, so it must be non-empty and contain no '{' or '}'"
        )


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
        self._scripts: dict[str, Script] = load_scripts()
        self._client: Any = None
        #: The pipelined connection script calls take on a single node (None on a cluster,
        #: or when the lane cannot honour the connection options: then the client's pool).
        self._lane: Lane | None = None
        self._listener: Listener | None = None
        #: What the server knows, so it outlives a connection: the queues registered there,
        #: and where task ids route (below).
        self._known_queues: set[str] = set()
        #: Queue codes (the end of generated task ids) -> queue, as read from ``codes``.
        self._code_queues: dict[str, str] = {}
        #: Task ids chosen by users -> queue, as read from their ``ix:<id>`` index.
        self._id_queues: dict[str, str] = {}
        #: This storage's part of its inbox channels' names (see `inbox`).
        self._inbox_token = os.urandom(6).hex()
        #: Reads coalesced per loop turn (see `fetch_raw`): whole records, outcomes only.
        self._record_reads: ReadCoalescer[_Read, _Raw | None] = ReadCoalescer(
            lambda reads: self._read_now(reads, outcome=False)
        )
        self._outcome_reads: ReadCoalescer[_Read, _Raw | None] = ReadCoalescer(
            lambda reads: self._read_now(reads, outcome=True)
        )
        self._reset_session()

    def _reset_session(self) -> None:
        """Start afresh what lives as long as one open on one event loop: wake-ups and
        subscriptions' bookkeeping, background tasks, and the loop-bound semaphore."""
        #: Per work channel: the workers' wake-up callbacks (`RedisBroker.watch_work`).
        self._work_callbacks: dict[str, list[Callable[[], None]]] = {}
        #: Per hand-off channel ``{Q}:hand:<worker>``: the parser of its messages.
        self._hand_handlers: dict[str, Callable[[bytes], None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._in_flight = asyncio.Semaphore(_SCRIPTS_IN_FLIGHT)
        self._record_reads.forget()
        self._outcome_reads.forget()
        #: Per inbox channel: how many times it was resubscribed (pushes may have been lost).
        self._inbox_epochs: dict[str, int] = {}
        #: Tasks this process created with its inbox registered (see `enqueue_inbox`): id ->
        #: (inbox, its epoch then); and outcomes pushed for them before anyone waited. A new
        #: open subscribes anew, so what an earlier one registered cannot count on a push.
        self._registered: dict[str, tuple[str, int]] = {}
        self._early = _EarlyOutcomes()

    # -- lifecycle -------------------------------------------------------------------------

    async def _open(self) -> None:
        self._reset_session()
        self._client = _make_client(self.url, self.cluster, self._client_options)
        lane = None if self.cluster else Lane.for_pool(self._client.connection_pool)
        try:
            await _ping_once(self._client)
            await self._load_scripts()
            if lane is not None:
                await lane.connect()
        except (
            RedisConnectionError,
            RedisTimeoutError,
            RedisClusterUnreachableError,
            OSError,
        ) as exc:
            if lane is not None:
                await lane.aclose()
            await _close_client(self._client)
            raise BackendUnavailable(
                f"cannot reach Redis at {self.describe()} ({type(exc).__name__}: {exc}); is "
                "the server running and the URL right (redis://host:port/db)?"
            ) from exc
        self._lane = lane
        self._listener = Listener(
            self._client,
            sharded=self.cluster,
            node_options=_node_options(self.url),
            on_message=self._on_message,
            on_resubscribed=self._on_resubscribed,
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
            await _close_client(self._client)
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
        return await self._scripts[name].run(target, keys, args)

    # -- keys and routing ------------------------------------------------------------------

    def qkey(self, queue: str, suffix: str) -> str:
        """The key ``<prefix>:{<queue>}:<suffix>`` (all of a queue's keys share its slot)."""
        return f"{self.prefix}{{{queue}}}:{suffix}"

    def _qargs(self, queue: str, now: float) -> list[Any]:
        return [self.prefix, queue, _t(now), str(self.events_maxlen), self._pubcmd]

    async def run_queue_script(self, name: str, queue: str, now: float, args: list[Any]) -> Any:
        """Run queue script `name` on `queue`'s slot with the prelude's arguments first."""
        keys = [self.qkey(queue, "ev")]
        if self._lane is not None:  # one shared pipelined connection: nothing to bound
            return await self._scripts[name].run(self._lane, keys, self._qargs(queue, now) + args)
        async with self._in_flight:
            return await self._scripts[name].run(self._client, keys, self._qargs(queue, now) + args)

    async def register_queues(self, queues: Iterable[str]) -> None:
        """Remember queue names in the ``<prefix>:queues`` set (for `cleanup`) and their codes
        in the ``<prefix>:codes`` hash (code -> queue, first writer wins), once per process:
        one round trip for a queue this process has not sent to before.

        Raises:
            ConfigError: a queue's code is another queue's already (then their ids could not be
                told apart; with 40-bit codes about one pair in 10^12 collides).
        """
        new = [q for q in set(queues) if q not in self._known_queues]
        if not new:
            return
        codes = [queue_code(q) for q in new]
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.sadd(f"{self.prefix}queues", *new)
            for code, queue in zip(codes, new, strict=True):
                pipe.hsetnx(f"{self.prefix}codes", code, queue)
            pipe.hmget(f"{self.prefix}codes", codes)
            owners = (await pipe.execute())[-1]
        for queue, code, owner in zip(new, codes, owners, strict=True):
            if owner.decode() != queue:
                raise ConfigError(
                    f"queue {queue!r} cannot be used on this Redis next to queue "
                    f"{owner.decode()!r}: both names hash to the code {code!r} that task ids "
                    "end with, so their ids could not be told apart; rename one of the queues"
                )
            self._code_queues[code] = queue
        self._known_queues.update(new)

    def remember_queue(self, task_id: str, queue: str) -> None:
        """Cache the queue of a task id chosen by a user (bounded)."""
        if len(self._id_queues) >= _ID_CACHE_MAX:
            self._id_queues.clear()
        self._id_queues[task_id] = queue

    async def index_ids(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """Write the id -> queue index of ids chosen by users (first writer wins).

        Returns per pair whether the id is (now) indexed to that queue; False means the id
        already belongs to a task of another queue.
        """
        keys = [f"{self.prefix}ix:{task_id}" for task_id, _ in pairs]
        results = await asyncio.gather(
            *(self._client.set(k, q, nx=True) for k, (_, q) in zip(keys, pairs, strict=True))
        )
        ok: list[bool] = []
        for key, (task_id, queue), written in zip(keys, pairs, results, strict=True):
            if not written:
                current = await self._client.get(key)
                if current is not None and current.decode() != queue:
                    ok.append(False)
                    continue
            self.remember_queue(task_id, queue)
            ok.append(True)
        return ok

    def local_queue(self, task_id: str) -> str | None:
        """The queue of a task id as far as this process knows it, without a read."""
        if is_task_id(task_id):
            return self._code_queues.get(task_id[-CODE_LENGTH:])
        return self._id_queues.get(task_id)

    async def resolve_queues(self, task_ids: Sequence[str]) -> list[str | None]:
        """The queue of each task id (None: no such task here): a generated id's by the code
        it ends with, a user's id through its index; each read once per process."""
        queues = [self.local_queue(task_id) for task_id in task_ids]
        missing = [i for i, queue in enumerate(queues) if queue is None]
        if missing:
            await self._look_up_queues(task_ids, missing, queues)
        return queues

    async def _look_up_queues(
        self, task_ids: Sequence[str], missing: list[int], queues: list[str | None]
    ) -> None:
        """Fill in `queues` at `missing`: codes from the ``codes`` hash (one read for all),
        ids chosen by users from their index, concurrently."""
        coded = [i for i in missing if is_task_id(task_ids[i])]
        indexed = [i for i in missing if not is_task_id(task_ids[i])]
        codes = list({task_ids[i][-CODE_LENGTH:] for i in coded})
        owners, *found = await asyncio.gather(
            self._client.hmget(f"{self.prefix}codes", codes) if codes else _none(),
            *(self._client.get(f"{self.prefix}ix:{task_ids[i]}") for i in indexed),
        )
        for code, owner in zip(codes, owners or (), strict=True):
            if owner is not None:
                self._code_queues[code] = owner.decode()
        for i in coded:
            queues[i] = self._code_queues.get(task_ids[i][-CODE_LENGTH:])
        for i, raw in zip(indexed, found, strict=True):
            if raw is not None:
                queues[i] = raw.decode()
                self.remember_queue(task_ids[i], raw.decode())

    # -- records ---------------------------------------------------------------------------

    async def fetch_raw(
        self, task_ids: Sequence[str], *, outcome: bool = False
    ) -> list[_Raw | None]:
        """Each task's stored hash and yields (None if unknown): the `RECORD_FIELDS` values, or
        with `outcome` only the `OUTCOME_FIELDS` values (and no yields).

        A task with a result waiter in this process is read *and* registered for a push of its
        outcome to this storage's inbox on its queue, in one atomic step (the listener is
        subscribed to that inbox first), so a completion right after the read is not missed.
        Reads asked for in the same event-loop turn (a thousand result waiters starting at
        once) are coalesced into one script call per queue.
        """
        queues = await self.resolve_queues(task_ids)
        watched = [
            q is not None and tid in self.waiters for tid, q in zip(task_ids, queues, strict=True)
        ]
        inboxes = {self.inbox(q) for q, w in zip(queues, watched, strict=True) if w and q}
        if inboxes:
            await self._require_listener().subscribe(inboxes)
        reads = self._outcome_reads if outcome else self._record_reads
        return await reads.read_many(list(zip(task_ids, queues, watched, strict=True)))

    async def _read_now(self, reads: list[_Read], *, outcome: bool) -> list[_Raw | None]:
        """Read (and register) a coalesced batch: one ``get`` script call per queue (in chunks
        of `_READ_CHUNK` ids)."""
        task_ids = [task_id for task_id, _, _ in reads]
        queues = [queue for _, queue, _ in reads]
        watched = [w for _, _, w in reads]
        out: list[_Raw | None] = [None] * len(task_ids)
        chunks: list[tuple[str, list[int]]] = []
        for queue, idx in _group(queues).items():
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
                        out[i] = (values, _NO_YIELDS)
                continue
            for i, found in zip(idx, reply, strict=True):
                if found:
                    out[i] = (found[0], found[1])
        return out

    async def _get_many(self, task_ids: Sequence[str], now: float) -> list[TaskRecord | None]:
        raws = await self.fetch_raw(task_ids)
        return [None if raw is None else _record(raw[0], raw[1], now) for raw in raws]

    async def _get_outcomes(self, task_ids: Sequence[str], now: float) -> list[TaskOutcome | None]:
        if self._registered or self._early:
            known = [self._known_outcome(task_id) for task_id in task_ids]
            unknown = [t for t, k in zip(task_ids, known, strict=True) if k is None]
            if not unknown:
                return known
            read = iter(await self._read_outcomes(unknown, now))
            return [k if k is not None else next(read) for k in known]
        return await self._read_outcomes(task_ids, now)

    async def _read_outcomes(self, task_ids: Sequence[str], now: float) -> list[TaskOutcome | None]:
        raws = await self.fetch_raw(task_ids, outcome=True)
        return [
            None if raw is None else _outcome(task_id, raw[0], now)
            for task_id, raw in zip(task_ids, raws, strict=True)
        ]

    async def _report(self, updates: Sequence[ProgressUpdate], now: float) -> list[bool]:
        queues = await self.resolve_queues([u.task_id for u in updates])
        out = [False] * len(updates)
        for queue, idx in _group(queues).items():
            args: list[Any] = [str(len(idx))]
            for i in idx:
                u = updates[i]
                prog = b"" if u.progress is None else msgspec.msgpack.encode(u.progress)
                args += [u.task_id, str(u.token), prog, _progress_text(u.progress)]
                args += [str(len(u.yields)), *u.yields]
            reply = await self.run_queue_script("report", queue, now, args)
            for i, ok in zip(idx, reply, strict=True):
                out[i] = bool(ok)
        return out

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
        hand = self._hand_handlers.get(channel)
        if hand is not None:
            hand(data)
        elif ":inbox:" in channel:
            pos, end = 0, len(data)
            while pos < end:
                raw_id, pos = _take(data, pos)
                fields, _, pos = _unpack_record(data, pos)
                task_id = raw_id.decode()
                if task_id in self.waiters:
                    values = [fields.get(k) for k in _OUTCOME_KEYS]
                    # It just ended, so its result has not expired (now=-inf).
                    self.waiters.wake(task_id, _outcome(task_id, values, float("-inf")))
                else:
                    # Kept for a later result(): a task created with this inbox registered
                    # can end before its enqueue's reply is even processed (see enqueue_inbox).
                    self._early.put(task_id, [fields.get(k) for k in _OUTCOME_KEYS])
        elif channel.endswith(":work"):
            for callback in self._work_callbacks.get(channel, ()):
                callback()

    def _on_resubscribed(self, channel: str) -> None:
        if channel.endswith(":work"):
            self._on_message(channel, b"1")
            return
        # Registrations made before cannot count on their push any more (see enqueue_inbox).
        self._inbox_epochs[channel] = self._inbox_epochs.get(channel, 0) + 1
        # Outcomes pushed while we were disconnected were lost: re-read the waited ids.
        waited = [tid for tid in self.waiters.task_ids() if self._inbox_of(tid) == channel]
        if waited:
            task = asyncio.get_running_loop().create_task(self._recheck(waited))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def enqueue_inbox(self, queue: str) -> str:
        """The inbox an enqueue on `queue` registers on the tasks it creates, or "".

        Once this process waits for results on a queue (its inbox there is subscribed), the
        tasks it sends there carry the inbox from the start, as a waiter's read would add it:
        their outcome is pushed here however soon it comes, so `result()` needs no read. Not
        subscribed (a producer that never waits): nothing is registered and nothing pushed.
        """
        inbox = self.inbox(queue)
        listener = self._listener
        return inbox if listener is not None and listener.is_subscribed(inbox) else ""

    def registered(self, task_ids: Sequence[str], inbox: str) -> None:
        """Remember that `task_ids` were created with `inbox` registered."""
        mark = (inbox, self._inbox_epochs.get(inbox, 0))
        registered = self._registered
        for task_id in task_ids:
            registered[task_id] = mark
        while len(registered) > _REGISTERED_MAX:  # the oldest go first
            del registered[next(iter(registered))]

    def _known_outcome(self, task_id: str) -> TaskOutcome | None:
        """Without a read: the outcome pushed for a task this process created with its inbox
        registered, or (once) a queued stand-in if it may still come (then the waiter waits
        for the push; a later read is a real one)."""
        early = self._early.pop(task_id)
        if early is not None:
            self._registered.pop(task_id, None)
            return _outcome(task_id, early, float("-inf"))
        mark = self._registered.pop(task_id, None)
        if mark is not None and self._inbox_epochs.get(mark[0], 0) == mark[1]:
            return TaskOutcome(id=task_id, status=TaskStatus.QUEUED)
        return None

    def _inbox_of(self, task_id: str) -> str | None:
        queue = self.local_queue(task_id)
        return None if queue is None else self.inbox(queue)

    async def _recheck(self, task_ids: list[str]) -> None:
        try:
            raws = await self.fetch_raw(task_ids)
        except Exception:
            logger.exception("re-reading waited tasks after a Redis reconnect failed")
            return
        for task_id, raw in zip(task_ids, raws, strict=True):
            status = None if raw is None else raw[0][_ST]
            if status is not None and TaskStatus(status.decode()).terminal:
                self.waiters.wake(task_id)

    # -- events ----------------------------------------------------------------------------

    async def _read_events(self, queue: str, after: str | None, limit: int) -> list[Event]:
        start = "-" if after is None else f"({_stream_cursor(after)}"
        entries = await self._client.xrange(self.qkey(queue, "ev"), start, "+", count=limit)
        return [_event(queue, entry_id, fields) for entry_id, fields in entries]

    async def _latest_cursor(self, queue: str) -> str | None:
        newest = await self._client.xrevrange(self.qkey(queue, "ev"), "+", "-", count=1)
        return newest[0][0].decode() if newest else None

    async def _wait_events(self, queue: str, after: str | None) -> None:
        await self._client.xread(
            {self.qkey(queue, "ev"): _stream_cursor(after or "0-0")},
            count=1,
            block=_EVENTS_BLOCK_MS,
        )

    # -- maintenance -----------------------------------------------------------------------

    async def _cleanup(self, now: float, keep_s: float) -> int:
        queues = [q.decode() for q in await self._client.smembers(f"{self.prefix}queues")]
        deleted = 0
        for queue in queues:
            ids = await self.run_queue_script("cleanup", queue, now, [_t(now - keep_s)])
            deleted += len(ids)
            indexed = [i.decode() for i in ids if not is_task_id(i.decode())]
            for task_id in indexed:
                await self._client.delete(f"{self.prefix}ix:{task_id}")
                self._id_queues.pop(task_id, None)
        return deleted


class RedisCoordination(Coordination):
    """Leases (one hash each, changed by ``lua/lease.lua``) and key-value records (two hashes
    per namespace, written by ``lua/kv_set.lua``), through the storage's connections (opened
    and closed by the broker, after and before the storage).

    Args:
        storage: The `RedisStorage` of the same server.
    """

    def __init__(self, storage: RedisStorage) -> None:
        self._rs = storage

    # -- leases ----------------------------------------------------------------------------

    def _lease_key(self, name: str) -> str:
        return f"{self._rs.prefix}lease:{name}"

    async def _lease(
        self, name: str, op: str, owner: str, token: int, exp: float, now: float
    ) -> Any:
        args = [op, owner, str(token), _t(exp), _t(now)]
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


class RedisBroker(Broker):
    """Moves messages through Redis: one Lua script call per queue per batch.

    Args:
        storage: the `RedisStorage` of the same server (opened and closed with the broker).
    """

    storage: RedisStorage
    coordination: RedisCoordination

    def __init__(self, storage: RedisStorage) -> None:
        super().__init__(storage, RedisCoordination(storage))
        self._redis = storage
        self._reset_session()

    def _reset_session(self) -> None:
        """Start afresh what one open knew of the queues and of its workers: a new open (on any
        loop) may have missed wake-ups, and its workers watch anew."""
        #: The workers watching for work (`watch_work`), by worker id.
        self._watchers: dict[str, _Watch] = {}

    async def _open(self) -> None:
        self._reset_session()

    def _queue_code(self, queue: str) -> str:
        check_queue_name(queue)
        return queue_code(queue)

    def _check_routing(self, message: TaskMessage) -> bool:
        """True if `message`'s id routes by its code (a generated id), False if it needs the
        id index (an id chosen by a user).

        Raises:
            ConfigError: the queue's name cannot be a hash tag, or the id has the shape of a
                generated id but another queue's code.
        """
        queue = message.queue
        code = self._queue_codes.get(queue) or self._code_for(queue)
        task_id = message.id
        if not is_task_id(task_id):
            return False
        if task_id[-CODE_LENGTH:] != code:
            raise ConfigError(
                f"task id {task_id!r} has the shape of the ids taskflow makes ({TASK_ID_LENGTH} "
                f"lowercase base32 characters) but not the code of queue {queue!r} at its end, "
                "which on Redis names the task's queue: choose an id of another shape (for "
                "example 'order-17'), or let taskflow choose one"
            )
        return True

    # -- enqueue ---------------------------------------------------------------------------

    async def _enqueue(self, messages: Sequence[TaskMessage], now: float) -> list[EnqueueResult]:
        rs = self._redis
        by_index = [i for i, m in enumerate(messages) if not self._check_routing(m)]
        queues = {m.queue for m in messages}
        if not queues <= rs._known_queues:
            await rs.register_queues(queues)
        results: list[EnqueueResult | None] = [None] * len(messages)
        if by_index:
            indexed = await rs.index_ids([(messages[i].id, messages[i].queue) for i in by_index])
            for i, ok in zip(by_index, indexed, strict=True):
                if not ok:  # the id belongs to a task of another queue
                    results[i] = EnqueueResult(messages[i].id, False)
        todo = [i for i in range(len(messages)) if results[i] is None]
        groups = _group([messages[i].queue for i in todo])
        inboxes = {q: rs.enqueue_inbox(q) for q in groups}

        async def part(queue: str, picked: list[int]) -> None:
            """Enqueue the messages `picked` (all of `queue`) in one script call."""
            args = _enqueue_args([messages[i] for i in picked], now, inboxes[queue])
            reply = await rs.run_queue_script("enqueue", queue, now, args)
            created = []
            for n, i in enumerate(picked):
                result = EnqueueResult(reply[2 * n].decode(), bool(reply[2 * n + 1]))
                results[i] = result
                if result.created:
                    created.append(result.task_id)
            if inboxes[queue] and created:
                rs.registered(created, inboxes[queue])

        if len(groups) == 1 and len(todo) <= _ENQUEUE_FIRST:
            # One queue, one call (the usual case, always for a single message): no task.
            await part(messages[todo[0]].queue, todo)
        else:
            picks = {q: [todo[j] for j in idx] for q, idx in groups.items()}
            await self._enqueue_parts(part, picks)
        return [r for r in results if r is not None]

    async def _enqueue_parts(
        self,
        part: Callable[[str, list[int]], Awaitable[None]],
        groups: dict[str, list[int]],
    ) -> None:
        """Enqueue several queues' messages (`groups`: queue -> indexes), or many, as concurrent
        script calls `part`.

        On a lane (one ordered connection per node) a queue's messages go in chunks, each
        written as soon as it is packed and its reply handled as soon as it comes: the server
        stores one chunk while this process packs the next and reads the last one's reply,
        instead of each side waiting for the other's whole batch. The first chunk is small
        (`_ENQUEUE_FIRST`) so the server starts early, the others `_ENQUEUE_CHUNK`. The chunks
        of a queue run in order, so ids and dedup keys repeated across chunks resolve as in one
        call. Without a lane (a cluster client, whose calls may take different connections,
        so order across calls is not kept) each queue gets one call.
        """
        laned = self._redis._lane is not None
        calls: list[asyncio.Future[None]] = []
        try:
            for queue, picked in groups.items():
                start = 0
                while start < len(picked):
                    size = len(picked)
                    if laned:
                        size = _ENQUEUE_FIRST if start == 0 else _ENQUEUE_CHUNK
                    chunk = picked[start : start + size]
                    start += size
                    calls.append(asyncio.ensure_future(part(queue, chunk)))
                    await asyncio.sleep(0)  # let it be packed and written before the next
            await asyncio.gather(*calls)
        except BaseException:
            for call in calls:
                call.cancel()
            raise

    # -- claim / extend / complete ---------------------------------------------------------

    async def _claim(
        self, queues: Sequence[str], limit: int, lease_s: float, now: float, worker_id: str
    ) -> list[Delivery]:
        watch = self._watchers.get(worker_id)
        if watch is not None and watch.handed:  # claimed for it by an enqueue: no round trip
            handed = watch.handed
            return [handed.popleft() for _ in range(min(limit, len(handed)))]
        rs = self._redis
        lease_until = now + lease_s
        # Parked for hand-offs only once the hand-off channel's subscription is confirmed.
        hand = None if watch is None else watch.hand
        listener = rs._listener
        park = _t(lease_s) if hand and listener and listener.is_subscribed(hand) else ""
        fixed = [_t(lease_until), worker_id, _t(now + self.result_ttl_s), _LEASE_EXPIRED]
        deliveries: list[Delivery] = []
        for queue in queues:
            want = limit - len(deliveries)
            if want <= 0:
                break
            nonce = os.urandom(8).hex()
            reply = await rs.run_queue_script("claim", queue, now, [str(want), *fixed, nonce, park])
            for j in range(0, len(reply), 4):
                deliveries.append(
                    Delivery(
                        task_id=reply[j].decode(),
                        token=int(reply[j + 1]),
                        attempt=int(reply[j + 2]),
                        data=reply[j + 3],
                        lease_expires_at=lease_until,
                    )
                )
        return deliveries

    async def _extend(
        self, leases: Sequence[Lease], lease_s: float, now: float
    ) -> list[LeaseState]:
        rs = self._redis
        queues = await rs.resolve_queues([lease.task_id for lease in leases])
        out = [LeaseState.LOST] * len(leases)
        groups = _group(queues)
        replies = await asyncio.gather(
            *(
                rs.run_queue_script(
                    "extend",
                    q,
                    now,
                    [_t(now + lease_s)]
                    + [x for i in idx for x in (leases[i].task_id, str(leases[i].token))],
                )
                for q, idx in groups.items()
            )
        )
        for idx, reply in zip(groups.values(), replies, strict=True):
            for i, code in zip(idx, reply, strict=True):
                out[i] = _LEASE_CODES[int(code)]
        return out

    async def _complete(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        rs = self._redis
        queues = await rs.resolve_queues([o.task_id for o in outcomes])
        out = [False] * len(outcomes)
        groups = _group(queues)
        calls = [
            rs.run_queue_script("complete", q, now, _complete_args([outcomes[i] for i in idx]))
            for q, idx in groups.items()
        ]
        # One queue (the usual case): no gather, no extra task on the latency path.
        replies = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
        for idx, reply in zip(groups.values(), replies, strict=True):
            for i, ok in zip(idx, reply, strict=True):
                out[i] = bool(ok)
                outcome = outcomes[i]
                if ok and outcome.kind not in (OutcomeKind.RETRY, OutcomeKind.RELEASE):
                    # Waiters in this process need not wait for the pub/sub round trip.
                    rs.waiters.wake(outcome.task_id)
        return out

    # -- cancel, scheduling, waiting for work ----------------------------------------------

    async def _cancel(self, task_ids: Sequence[str], now: float) -> list[CancelResult]:
        rs = self._redis
        queues = await rs.resolve_queues(task_ids)
        out = [CancelResult.NOT_FOUND] * len(task_ids)
        for queue, idx in _group(queues).items():
            args = [_t(now + self.result_ttl_s)] + [task_ids[i] for i in idx]
            reply = await rs.run_queue_script("cancel", queue, now, args)
            for i, code in zip(idx, reply, strict=True):
                out[i] = _CANCEL_CODES[code]
                if out[i] is CancelResult.CANCELLED:
                    rs.waiters.wake(task_ids[i])
        return out

    async def _inspect(
        self, queues: Sequence[str], now: float, *, finished: bool = False
    ) -> list[list[Any]]:
        args = ["1"] if finished else []
        return list(
            await asyncio.gather(
                *(self._redis.run_queue_script("inspect", q, now, args) for q in queues)
            )
        )

    def _watch_work(self, queues: list[str], worker_id: str, callback: Callable[[], None]) -> None:
        """Call `callback` from the listener on every wake-up published on `queues`' work
        channels. The subscription completes in the background; `next_due` waits for it
        before it reads the queue state, so a wake-up cannot fall between that read and the
        subscription."""
        rs = self._redis
        channels = [rs.qkey(q, "work") for q in queues]
        for channel in channels:
            rs._work_callbacks.setdefault(channel, []).append(callback)
        watch = self._watchers[worker_id] = _Watch(list(channels), callback)
        if not rs.cluster and len(queues) == 1:
            # Direct hand-offs: a worker of one queue on a single node can be parked.
            watch.hand = rs.qkey(queues[0], f"hand:{worker_id}")
            watch.park = rs.qkey(queues[0], "park")
            rs._hand_handlers[watch.hand] = functools.partial(_Watch.take, watch)
            channels.append(watch.hand)
        task = asyncio.get_running_loop().create_task(self._subscribe_work(channels))
        rs._background.add(task)
        task.add_done_callback(rs._background.discard)

    def _on_late_hand(self, now: float, data: bytes) -> None:
        """A hand-off that arrived after its worker stopped watching: give it back."""
        outcomes = [Outcome(d.task_id, d.token, OutcomeKind.RELEASE) for d in _handed_off(data)]
        task = asyncio.get_running_loop().create_task(self._give_back(outcomes, now))
        self._redis._background.add(task)
        task.add_done_callback(self._redis._background.discard)

    async def _give_back(self, outcomes: list[Outcome], now: float) -> None:
        try:
            await self.complete(outcomes, now=now)
        except Exception:
            logger.exception(
                "could not give back %d handed-off task(s); they are re-delivered when their "
                "leases lapse",
                len(outcomes),
            )

    async def _unwatch_work(self, queues: list[str], worker_id: str, now: float) -> None:
        """End `watch_work`: no more wake-up calls; unpark the worker and give back the
        hand-offs its claims have not taken (their attempt refunded), now or as they arrive."""
        rs = self._redis
        watch = self._watchers.pop(worker_id, None)
        if watch is None:
            return
        for channel in watch.work_channels:
            callbacks = rs._work_callbacks.get(channel, [])
            if watch.callback in callbacks:
                callbacks.remove(watch.callback)
        if watch.hand is None:
            return
        rs._hand_handlers[watch.hand] = functools.partial(self._on_late_hand, now)
        await rs._client.hdel(watch.park, worker_id)
        if watch.handed:
            await self._give_back(
                [Outcome(d.task_id, d.token, OutcomeKind.RELEASE) for d in watch.handed], now
            )

    async def _subscribe_work(self, channels: list[str]) -> None:
        try:
            await self._redis._require_listener().subscribe(channels)
        except Exception:  # next_due subscribes again before it reads anything
            logger.warning("subscribing to %s failed; retrying at the next idle check", channels)

    async def _next_due(self, queues: Sequence[str], now: float) -> float | None:
        if self._redis._work_callbacks:
            # Workers woken by callback: be subscribed before reading (free once subscribed).
            await self._redis._require_listener().subscribe(
                self._redis.qkey(q, "work") for q in queues
            )
        times: list[float] = []
        for facts in await self._inspect(queues, now):
            if int(facts[6]) > 0 or int(facts[0]) > 0:  # claimable already
                return now
            times += [float(t) for t in facts[4:6] if t]
        return min(times, default=None)

    # -- dead letters and inspection -------------------------------------------------------

    async def _dead_letters(self, queue: str, limit: int, offset: int) -> list[TaskRecord]:
        if limit <= 0:
            return []
        raw_ids = await self._redis._client.zrevrange(
            self._redis.qkey(queue, "dead"), offset, offset + limit - 1
        )
        ids = [i.decode() for i in raw_ids]
        for task_id in ids:
            if not is_task_id(task_id):
                self._redis.remember_queue(task_id, queue)
        records = await self._redis.get_many(ids, now=0.0)
        return [r for r in records if r is not None]

    async def _requeue_dead(
        self, task_ids: Sequence[str], now: float, new_ids: Sequence[str]
    ) -> list[str | None]:
        rs = self._redis
        raws = await rs.fetch_raw(task_ids)
        out: list[str | None] = [None] * len(task_ids)
        plans: list[tuple[int, TaskMessage]] = []
        by_index: list[tuple[str, str]] = []
        for i, (raw, new_id) in enumerate(zip(raws, new_ids, strict=True)):
            if raw is None or raw[0][_ST] != b"failed":
                continue
            old = decode_message(raw[0][_MSG] or b"")
            new = msgspec.structs.replace(
                old, id=new_id, requeued_from=old.id, eta=None, created_at=now
            )
            if not self._check_routing(new):
                by_index.append((new.id, new.queue))
            plans.append((i, new))
        if by_index:
            await rs.index_ids(by_index)
        if plans:
            await rs.register_queues(new.queue for _, new in plans)
        groups = _group([new.queue for _, new in plans])
        for queue, idx in groups.items():
            args: list[Any] = [str(len(idx))]
            for j in idx:
                i, new = plans[j]
                args += [
                    task_ids[i],
                    new.id,
                    _queued_form(new, "queued", ""),
                    str(new.priority),
                    new.dedup_key or "",
                    new.order_id or "",
                    new.name,
                ]
            reply = await rs.run_queue_script("requeue", queue, now, args)
            for j, new_id in zip(idx, reply, strict=True):
                out[plans[j][0]] = new_id.decode() or None
        return out

    async def _stats(self, queues: Sequence[str], now: float) -> list[QueueStats]:
        facts = await self._inspect(queues, now, finished=True)
        return [
            QueueStats(
                queue=q,
                queued=int(f[0]),
                scheduled=int(f[1]),
                running=int(f[2]),
                dead=int(f[3]),
                finished_last_minute=int(f[7]),
            )
            for q, f in zip(queues, facts, strict=True)
        ]

    async def _purge(self, queue: str, error: ErrorInfo, now: float) -> int:
        rs = self._redis
        args = [_t(now + self.result_ttl_s), _msgpack_encode(error), _PURGE_CHUNK, error.type]
        purged = 0
        while True:  # in chunks: one script call must not hold the server for long
            ended = await rs.run_queue_script("purge", queue, now, args)
            for task_id in ended:
                rs.waiters.wake(task_id.decode())
            purged += len(ended)
            if len(ended) < _PURGE_CHUNK:
                return purged


# --- helpers ------------------------------------------------------------------------------


async def _none() -> None:
    """Nothing to read (stands in for a read that is not needed)."""
    return None


def _group(queues: Sequence[str | None]) -> dict[str, list[int]]:
    """Indexes by queue, in first-seen order (None, an unknown id, is left out)."""
    groups: dict[str, list[int]] = {}
    for i, queue in enumerate(queues):
        if queue is not None:
            groups.setdefault(queue, []).append(i)
    return groups


def _stream_cursor(after: str) -> str:
    """`after` checked to be a stream entry id (``<ms>-<seq>``), the cursor of a Redis event."""
    ms, dash, seq = after.partition("-")
    if not (dash and ms.isdigit() and seq.isdigit()):
        raise ValueError(
            f"event cursor {after!r} is not a Redis event cursor (a stream id like "
            "'1700000000000-0'): pass the `cursor` of an Event read from this backend, None to "
            "start at the oldest kept event, or taskflow.abc.LATEST for only what comes next"
        )
    return after


def _progress_text(progress: Progress | None) -> str:
    if progress is None:
        return ""
    total = "?" if progress.total is None else str(progress.total)
    return f"{progress.done}/{total}"


def _frame(items: list[str | msgspec.Raw]) -> bytes:
    """Pack a batch as one argument, a msgpack array of strings (``unframe`` in
    lua/common.lua). Binary strings go in as `_raw_str`: the msgpack library of Redis's Lua has
    no "bin" type, and "str" is just bytes to Lua."""
    return _msgpack_encode(items)


_FIXSTR: Final = tuple(bytes((0xA0 | size,)) for size in range(32))
_EMPTY: Final = msgspec.Raw(_FIXSTR[0])


def _raw_str(data: bytes) -> msgspec.Raw:
    """`data` as a msgpack "str" (any bytes; Lua strings are byte strings)."""
    size = len(data)
    if size < 32:
        return msgspec.Raw(_FIXSTR[size] + data)
    if size < 0x100:
        header = bytes((0xD9, size))
    elif size < 0x10000:
        header = b"\xda" + size.to_bytes(2, "big")
    else:
        header = b"\xdb" + size.to_bytes(4, "big")
    return msgspec.Raw(header + data)


def _queued_form(m: TaskMessage, state: str, inbox: str) -> bytes:
    """The fields of a new task's queued form (``QF`` in lua/common.lua), packed here rather
    than by the server: a msgpack array."""
    fields = [
        _raw_str(encode_message(m)),
        state,
        str(m.priority),
        str(m.retries),
        m.dedup_key or "",
        _opt_t(m.dedup_ttl_s),
        m.order_id or "",
        "" if m.store_result else "1",
        inbox,
        m.name,
    ]
    return _msgpack_encode(fields)


def _enqueue_args(messages: Sequence[TaskMessage], now: float, inbox: str) -> list[Any]:
    """The enqueue script's batch: per message its id, queued form, priority, due time,
    scheduled flag, dedup key, order id and name; `inbox` ('' for none) is registered on each."""
    args: list[str | msgspec.Raw] = []
    for m in messages:
        eta = m.eta
        scheduled = eta is not None and eta > now
        args += (
            m.id,
            _raw_str(_queued_form(m, "scheduled" if scheduled else "queued", inbox)),
            str(m.priority),
            _t(now if eta is None else eta),
            "1" if scheduled else "0",
            m.dedup_key or "",
            m.order_id or "",
            m.name,
        )
    return [_frame(args)]


def _complete_args(outcomes: Sequence[Outcome]) -> list[Any]:
    args: list[str | msgspec.Raw] = []
    for o in outcomes:
        error = o.error
        result = o.result
        args += (
            o.task_id,
            str(o.token),
            o.kind.value,
            _EMPTY if result is None else _raw_str(result),
            _EMPTY if error is None else _raw_str(_msgpack_encode(error)),
            "" if error is None else error.type,
            _opt_t(o.retry_at),
            _opt_t(o.result_expires_at),
        )
    return [_frame(args)]


def _record(fields: list[bytes | None], yields: list[bytes], now: float) -> TaskRecord:
    """A `TaskRecord` from the `RECORD_FIELDS` values the ``get`` script read."""
    msg = decode_message(fields[_MSG] or b"")
    return TaskRecord(
        id=msg.id,
        name=msg.name,
        queue=msg.queue,
        priority=msg.priority,
        retries=msg.retries,
        created_at=msg.created_at,
        eta=msg.eta,
        yields=yields,
        parent_id=msg.parent_id,
        order_id=msg.order_id,
        requeued_from=msg.requeued_from,
        dedup_key=msg.dedup_key,
        store_result=msg.store_result,
        **_state(fields, now),
    )


def _outcome(task_id: str, values: list[bytes | None], now: float) -> TaskOutcome:
    """A `TaskOutcome` from the `OUTCOME_FIELDS` values the ``get`` script read."""
    status, result, err, rx = values
    expires_at = _opt_float(rx)
    expired = expires_at is not None and expires_at <= now
    return TaskOutcome(
        id=task_id,
        status=TaskStatus(status.decode() if status else "queued"),
        result=None if expired else result,
        error=None if not err else _error_decoder.decode(err),
        result_expires_at=expires_at,
        result_expired=expired,
    )


def _state(fields: list[bytes | None], now: float) -> dict[str, Any]:
    """The `TaskRecord` fields that change while a task lives, from `RECORD_FIELDS` values."""
    expires_at = _opt_float(fields[_RX])
    expired = expires_at is not None and expires_at <= now
    err = fields[_ERR]
    prog = fields[_PROG]
    status = fields[_ST]
    return {
        "status": TaskStatus(status.decode() if status else "queued"),
        "attempts": int(fields[_ATT] or 0),
        "started_at": _opt_float(fields[_SA]),
        "finished_at": _opt_float(fields[_FA]),
        "result": None if expired else fields[_RES],
        "error": None if not err else _error_decoder.decode(err),
        "progress": None if not prog else _progress_decoder.decode(prog),
        "cancel_requested": fields[_CR] == b"1",
        "result_expires_at": expires_at,
        "result_expired": expired,
        "token": int(fields[_TOK] or 0),
        "worker_id": _text(fields[_WID]),
    }


def _handed_off(data: bytes) -> list[Delivery]:
    """The deliveries of a hand-off message (enqueue.lua): ``<len>:<lease expiry>``, then per
    task ``<len>:<id>`` and ``<len>:<message>``; each is a first attempt under token 1."""
    raw_lx, pos = _take(data, 0)
    lease_until = float(raw_lx)
    deliveries = []
    end = len(data)
    while pos < end:
        raw_id, pos = _take(data, pos)
        message, pos = _take(data, pos)
        deliveries.append(Delivery(raw_id.decode(), 1, 1, message, lease_until))
    return deliveries


@dataclasses.dataclass(slots=True)
class _Watch:
    """A worker watching for work (`RedisBroker.watch_work`): its work channels and wake-up
    callback; for direct hand-offs (one queue, single node) its hand-off channel and the
    queue's park hash, and the deliveries handed off that its next claim returns."""

    work_channels: list[str]
    callback: Callable[[], None]
    hand: str | None = None
    park: str = ""
    handed: collections.deque[Delivery] = dataclasses.field(default_factory=collections.deque)

    def take(self, data: bytes) -> None:
        """A hand-off message for this worker: keep it for its next claim, and wake it."""
        self.handed.extend(_handed_off(data))
        self.callback()


class _EarlyOutcomes:
    """Outcomes pushed for tasks nobody waited for yet (the `OUTCOME_FIELDS` values), oldest
    dropped first beyond `_REGISTERED_MAX` entries or `_EARLY_BYTES_MAX` bytes (a dropped one
    costs its result() a read, nothing more)."""

    def __init__(self) -> None:
        self._items: dict[str, list[bytes | None]] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._items

    def put(self, task_id: str, values: list[bytes | None]) -> None:
        old = self._items.pop(task_id, None)
        if old is not None:
            self._bytes -= _size(old)
        self._items[task_id] = values
        self._bytes += _size(values)
        while self._items and (
            len(self._items) > _REGISTERED_MAX or self._bytes > _EARLY_BYTES_MAX
        ):
            self._bytes -= _size(self._items.pop(next(iter(self._items))))

    def pop(self, task_id: str) -> list[bytes | None] | None:
        values = self._items.pop(task_id, None)
        if values is not None:
            self._bytes -= _size(values)
        return values


def _size(values: list[bytes | None]) -> int:
    return sum(len(v) for v in values if v is not None)


def _take(data: bytes, pos: int) -> tuple[bytes, int]:
    """One ``<len>:<bytes>`` string at `pos`; returns it and the position after it."""
    colon = data.index(b":", pos)
    start = colon + 1
    end = start + int(data[pos:colon])
    return data[start:end], end


def _count(data: bytes, pos: int) -> tuple[int, int]:
    semi = data.index(b";", pos)
    return int(data[pos:semi]), semi + 1


def _unpack_record(data: bytes, pos: int) -> tuple[dict[bytes, bytes], list[bytes], int]:
    """The hash fields and yields of an outcome pushed by ``push_later`` (lua/common.lua), and
    the position after them."""
    n, pos = _count(data, pos)
    flat: list[bytes] = []
    for _ in range(n):
        item, pos = _take(data, pos)
        flat.append(item)
    n, pos = _count(data, pos)
    yields: list[bytes] = []
    for _ in range(n):
        item, pos = _take(data, pos)
        yields.append(item)
    return dict(zip(flat[::2], flat[1::2], strict=True)), yields, pos


def _event(queue: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    return Event(
        cursor=entry_id.decode(),
        task_id=fields[b"i"].decode(),
        queue=queue,
        kind=EventKind(fields[b"k"].decode()),
        at=float(fields[b"t"]),
        attempt=int(fields.get(b"a", b"0")),
        order_id=_text(fields.get(b"o")),
        detail=_text(fields.get(b"d")),
        name=fields.get(b"n", b"").decode(),
    )


def _make_client(url: str, cluster: bool, options: dict[str, Any]) -> Any:
    """A client that retries with jittered exponential backoff on connection loss.

    On a single node the pool *waits* for a free connection when all are busy (redis-py's
    default pool raises instead), so a burst of result waiters cannot fail.
    """
    settings: dict[str, Any] = {
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries=8),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "socket_keepalive": True,
        "socket_connect_timeout": 5.0,
        "max_connections": _MAX_CONNECTIONS,
    }
    settings.update(options)
    if cluster:
        return RedisCluster.from_url(url, **settings)
    settings.setdefault("timeout", _POOL_WAIT_S)
    pool = aioredis.BlockingConnectionPool.from_url(url, **settings)
    return aioredis.Redis(connection_pool=pool)


async def _ping_once(client: Any) -> None:
    """PING without the client's reconnect retries, so that a server that refuses or is
    missing is reported at once (with the retries, after about 6 s); the retries apply again
    afterwards."""
    retry = None if isinstance(client, RedisCluster) else client.get_retry()
    if retry is None:  # a cluster's first command connects to its nodes once, no retries
        await client.ping()
        return
    client.set_retry(Retry(NoBackoff(), 0))
    try:
        await client.ping()
    finally:
        client.set_retry(retry)


async def _close_client(client: Any) -> None:
    """Close a client made by `_make_client`, with its connection pool on a single node (a
    ``Redis`` given a pool leaves it open, its sockets to the garbage collector)."""
    if isinstance(client, aioredis.Redis):
        await client.aclose(close_connection_pool=True)
    else:
        await client.aclose()


def _node_options(url: str) -> dict[str, Any]:
    """Credentials and TLS of `url`, for the listener's own per-node connections on a cluster."""
    parts = urlsplit(url)
    options: dict[str, Any] = {"ssl": parts.scheme == "rediss"}
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    return options


def from_url(url: str, *, app: str = DEFAULT_APP, **options: Any) -> RedisBroker:
    """A `RedisBroker` (with its `RedisStorage`) for a Redis URL.

    Accepts ``redis://host:port/db``, ``rediss://...`` (TLS), and ``redis+cluster://host:port``
    / ``rediss+cluster://...`` for a Redis Cluster (any node's address; ``cluster=True`` does
    the same for a plain URL). `app` is the app's name: every key and channel starts with
    ``<prefix>:<app>:``, so apps with different names share nothing. Options: ``prefix``
    (default ``"taskflow"``; also accepted in the URL as ``?prefix=staging``), and anything
    ``redis.asyncio.Redis.from_url`` accepts.

    Raises:
        ConfigError: the URL's scheme is not one of these, or `app` cannot name an app.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ConfigError(
            f"{url!r} is not a Redis URL: use redis://host:port/db, rediss://host:port/db, or "
            "redis+cluster://host:port for a Redis Cluster"
        )
    real_scheme, is_cluster = _SCHEMES[scheme]
    cluster = bool(options.pop("cluster", False)) or is_cluster
    parts = urlsplit(f"{real_scheme}://{rest}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    url_prefix = [value for key, value in query if key == "prefix"]
    prefix = str(options.pop("prefix", url_prefix[-1] if url_prefix else "taskflow"))
    query_rest = urlencode([(key, value) for key, value in query if key != "prefix"])
    clean_url = urlunsplit(parts._replace(query=query_rest))
    storage = RedisStorage(clean_url, prefix=prefix, app=app, cluster=cluster, **options)
    return RedisBroker(storage)
