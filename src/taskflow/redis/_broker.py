"""`RedisBroker`: the Redis backend's message path, one Lua script call per queue per batch.

Enqueue (in pipelined chunks on a lane), claim under a lease, renew, complete, cancel, wake
idle workers (the queue's ``work`` channel) and hand new tasks straight to parked workers (their
``hand:<worker>`` channel, see ``lua/enqueue.lua``), dead letters, stats and purge. It reaches
its `RedisStorage` through the storage's public methods only.

What does not live here: the scripts (``lua/``), how arguments and replies are packed
(``_codec.py``), reading records and events and the listener (``_storage.py``), leases and
key-value records (``_coordination.py``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import msgspec

from .._exceptions import ConfigError
from .._ids import CODE_LENGTH, TASK_ID_LENGTH, is_task_id, queue_code
from .._message import (
    CancelResult,
    Delivery,
    EnqueueResult,
    ErrorInfo,
    Lease,
    LeaseState,
    Outcome,
    OutcomeKind,
    QueueStats,
    TaskMessage,
    TaskRecord,
)
from ..abc import Broker
from ._artifacts import RedisArtifactStore
from ._codec import (
    CANCEL_CODES,
    LEASE_CODES,
    LEASE_EXPIRED,
    NextDue,
    QueueFacts,
    complete_args,
    deliveries_from,
    enqueue_args,
    enqueued_from,
    flow_wiring,
    handed_off,
    is_flow_message,
    message_of,
    msgpack_encode,
    queued_form,
    split_outbox,
    status_of,
    time_arg,
)
from ._coordination import RedisCoordination
from ._outbox import deliver_outboxes
from ._routing import check_queue_name, group_by_queue
from ._storage import RedisStorage

__all__ = ["RedisBroker"]

logger = logging.getLogger("taskflow.redis")

#: Messages per enqueue script call when a batch is sent in pipelined chunks: the first
#: chunk, and each after it.
_ENQUEUE_FIRST: Final = 100

_ENQUEUE_CHUNK: Final = 250

#: Outcome kinds after which the task has not ended (its result waiters keep waiting).
_NOT_ENDED: Final = frozenset((OutcomeKind.RETRY, OutcomeKind.RELEASE, OutcomeKind.WAIT))

#: Most tasks one call of the ``purge`` script ends (the server runs nothing else meanwhile).
_PURGE_CHUNK: Final = 500


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
        self._routes = storage.routes
        self._reset_session()

    def _reset_session(self) -> None:
        """Start afresh what one open knew of the queues and of its workers: a new open (on any
        loop) may have missed wake-ups, and its workers watch anew."""
        #: The workers watching for work (`watch_work`), by worker id.
        self._watchers: dict[str, _Watch] = {}
        #: Per work channel: the wake-up callbacks of the workers watching it.
        self._work_callbacks: dict[str, list[Callable[[], None]]] = {}

    async def _open(self) -> None:
        self._reset_session()

    def default_artifact_store(self) -> RedisArtifactStore:
        """A `RedisArtifactStore` on this broker's connections: artifacts in 1 MiB chunks on the
        same server. Open it after the broker, close it before."""
        return RedisArtifactStore(self.storage)

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
        if any(m.flow_id for m in messages):
            await self._index_flows(messages)
        waiting = [i for i, m in enumerate(messages) if m.waits_for]
        if not waiting:  # the plain path: no flow parents
            return await self._enqueue_some(messages, now)
        # Children first: every WAITING task is stored before any of its parents can be
        # claimed, also across queues (one script call per queue is atomic only in itself).
        rest = [i for i, m in enumerate(messages) if not m.waits_for]
        results: list[EnqueueResult | None] = [None] * len(messages)
        for picked in (waiting, rest):
            done = await self._enqueue_some([messages[i] for i in picked], now)
            for i, result in zip(picked, done, strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    async def _route(self, messages: Sequence[TaskMessage]) -> list[EnqueueResult | None]:
        """Register `messages`' queues and index the ids chosen by users; the result of each
        message already decided (an id of another queue's task), None for the others."""
        by_index = [i for i, m in enumerate(messages) if not self._check_routing(m)]
        queues = {m.queue for m in messages}
        if not self._routes.knows(queues):
            await self._routes.register_queues(queues)
        results: list[EnqueueResult | None] = [None] * len(messages)
        if by_index:
            indexed = await self._routes.index_ids(
                [(messages[i].id, messages[i].queue) for i in by_index]
            )
            for i, ok in zip(by_index, indexed, strict=True):
                if not ok:  # the id belongs to a task of another queue
                    results[i] = EnqueueResult(messages[i].id, False)
        return results

    async def _index_flows(self, messages: Sequence[TaskMessage]) -> None:
        """Add the queues of `messages` to their flows' queue sets (``flq:{<flow>}``), which
        `RedisStorage.flow_tasks` reads, before the messages are stored."""
        flows: dict[str, set[str]] = {}
        for m in messages:
            if m.flow_id:
                flows.setdefault(m.flow_id, set()).add(m.queue)
        for flow_id, queues in flows.items():
            await self._redis.client.sadd(self._redis.flow_queues_key(flow_id), *queues)

    async def _enqueue_some(
        self, messages: Sequence[TaskMessage], now: float
    ) -> list[EnqueueResult]:
        """Enqueue `messages` in one script call per queue (or per chunk, see `_enqueue_parts`)."""
        if not messages:
            return []
        rs = self._redis
        results = await self._route(messages)
        todo = [i for i in range(len(messages)) if results[i] is None]
        groups = group_by_queue([messages[i].queue for i in todo])
        inboxes = {q: rs.enqueue_inbox(q) for q in groups}

        rx = now + self.result_ttl_s

        async def part(queue: str, picked: list[int]) -> None:
            """Enqueue the messages `picked` (all of `queue`) in one script call."""
            args = enqueue_args([messages[i] for i in picked], now, inboxes[queue], rx)
            reply, outbox = split_outbox(await rs.run_queue_script("enqueue", queue, now, args))
            if outbox:
                await self._deliver([queue], now)
            created = []
            for i, result in zip(picked, enqueued_from(reply), strict=True):
                results[i] = result
                if result.created:
                    created.append(result.task_id)
            if inboxes[queue] and created:
                rs.early.registered(created, inboxes[queue])

        if len(groups) == 1 and len(todo) <= _ENQUEUE_FIRST:
            # One queue, one call (the usual case, always for a single message): no task.
            await part(messages[todo[0]].queue, todo)
        else:
            picks = {q: [todo[j] for j in idx] for q, idx in groups.items()}
            await self._enqueue_parts(part, picks)
        return [r for r in results if r is not None]

    async def _deliver(self, queues: list[str], now: float) -> None:
        """Deliver what calls on `queues` left in their outboxes (ends of flow tasks for
        children of other queues, see ``_outbox.py``). The call that filled them succeeded
        whatever happens here: a delivery that fails is logged, and every worker's
        housekeeping delivers it again."""
        try:
            await deliver_outboxes(self._redis, queues, now, now + self.result_ttl_s)
        except Exception:
            logger.warning(
                "could not deliver the outboxes of %s now (ends of flow tasks for children in "
                "other queues); worker housekeeping delivers them again",
                queues,
                exc_info=True,
            )

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
        laned = self._redis.pipelined
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
        park = time_arg(lease_s) if hand and rs.is_subscribed(hand) else ""
        fixed = [time_arg(lease_until), worker_id, time_arg(now + self.result_ttl_s), LEASE_EXPIRED]
        deliveries: list[Delivery] = []
        for queue in queues:
            want = limit - len(deliveries)
            if want <= 0:
                break
            nonce = os.urandom(8).hex()
            reply = await rs.run_queue_script("claim", queue, now, [str(want), *fixed, nonce, park])
            unreadable, *flat = reply
            if unreadable and isinstance(unreadable[0], list):  # {unreadable, outbox entries}
                unreadable = unreadable[0]
                await self._deliver([queue], now)
            if unreadable:
                _log_unreadable(queue, unreadable)
            deliveries += deliveries_from(flat, lease_until)
        return deliveries

    async def _extend(
        self, leases: Sequence[Lease], lease_s: float, now: float
    ) -> list[LeaseState]:
        rs = self._redis
        queues = await self._routes.resolve_queues([lease.task_id for lease in leases])
        out = [LeaseState.LOST] * len(leases)
        groups = group_by_queue(queues)
        replies = await asyncio.gather(
            *(
                rs.run_queue_script(
                    "extend",
                    q,
                    now,
                    [time_arg(now + lease_s)]
                    + [x for i in idx for x in (leases[i].task_id, str(leases[i].token))],
                )
                for q, idx in groups.items()
            )
        )
        for idx, reply in zip(groups.values(), replies, strict=True):
            for i, code in zip(idx, reply, strict=True):
                out[i] = LEASE_CODES[int(code)]
        return out

    async def _complete(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        rs = self._redis
        queues = await self._routes.resolve_queues([o.task_id for o in outcomes])
        out = [False] * len(outcomes)
        groups = group_by_queue(queues)
        calls = [
            rs.run_queue_script(
                "complete",
                q,
                now,
                complete_args(
                    [outcomes[i] for i in idx], rs.errors_maxlen, now + self.result_ttl_s
                ),
            )
            for q, idx in groups.items()
        ]
        # One queue (the usual case): no gather, no extra task on the latency path.
        replies = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
        filled: list[str] = []
        for (queue, idx), full_reply in zip(groups.items(), replies, strict=True):
            reply, outbox = split_outbox(full_reply)
            if outbox:
                filled.append(queue)
            for i, ok in zip(idx, reply, strict=True):
                out[i] = bool(ok)
                outcome = outcomes[i]
                if ok and outcome.kind not in _NOT_ENDED:
                    # Waiters in this process need not wait for the pub/sub round trip.
                    rs.waiters.wake(outcome.task_id)
        if filled:
            await self._deliver(filled, now)
        return out

    # -- cancel, scheduling, waiting for work ----------------------------------------------

    async def _cancel(self, task_ids: Sequence[str], now: float) -> list[CancelResult]:
        rs = self._redis
        queues = await self._routes.resolve_queues(task_ids)
        out = [CancelResult.NOT_FOUND] * len(task_ids)
        for queue, idx in group_by_queue(queues).items():
            args = [time_arg(now + self.result_ttl_s)] + [task_ids[i] for i in idx]
            reply, outbox = split_outbox(await rs.run_queue_script("cancel", queue, now, args))
            if outbox:
                await self._deliver([queue], now)
            for i, code in zip(idx, reply, strict=True):
                out[i] = CANCEL_CODES[code]
                if out[i] is CancelResult.CANCELLED:
                    rs.waiters.wake(task_ids[i])
        return out

    async def _wake(self, task_ids: list[str], now: float) -> None:
        rs = self._redis
        queues = await self._routes.resolve_queues(task_ids)
        await asyncio.gather(
            *(
                rs.run_queue_script("wake", queue, now, [task_ids[i] for i in idx])
                for queue, idx in group_by_queue(queues).items()
            )
        )

    async def _inspect(self, queues: Sequence[str], now: float, mode: str) -> list[Any]:
        """The ``inspect`` script's reply for each of `queues`, in `mode` ('due' or 'stats')."""
        return list(
            await asyncio.gather(
                *(self._redis.run_queue_script("inspect", q, now, [mode]) for q in queues)
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
            callbacks = self._work_callbacks.get(channel)
            if callbacks is None:
                callbacks = self._work_callbacks[channel] = []
                wake = functools.partial(_call_each, callbacks)
                rs.listen(channel, wake, on_resubscribed=wake)
            callbacks.append(callback)
        watch = self._watchers[worker_id] = _Watch(list(channels), callback)
        if not rs.cluster and len(queues) == 1:
            # Direct hand-offs: a worker of one queue on a single node can be parked.
            watch.hand = rs.qkey(queues[0], f"hand:{worker_id}")
            watch.park = rs.qkey(queues[0], "park")
            rs.listen(watch.hand, functools.partial(_Watch.take, watch))
            channels.append(watch.hand)
        rs.spawn(self._subscribe_work(channels))

    def _on_late_hand(self, now: float, data: bytes) -> None:
        """A hand-off that arrived after its worker stopped watching: give it back."""
        outcomes = [Outcome(d.task_id, d.token, OutcomeKind.RELEASE) for d in handed_off(data)]
        self._redis.spawn(self._give_back(outcomes, now))

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
            callbacks = self._work_callbacks.get(channel, [])
            if watch.callback in callbacks:
                callbacks.remove(watch.callback)
        if watch.hand is None:
            return
        rs.listen(watch.hand, functools.partial(self._on_late_hand, now))
        await rs.client.hdel(watch.park, worker_id)
        if watch.handed:
            await self._give_back(
                [Outcome(d.task_id, d.token, OutcomeKind.RELEASE) for d in watch.handed], now
            )

    async def _subscribe_work(self, channels: list[str]) -> None:
        try:
            await self._redis.subscribe(channels)
        except Exception:  # next_due subscribes again before it reads anything
            logger.warning("subscribing to %s failed; retrying at the next idle check", channels)

    async def _next_due(self, queues: Sequence[str], now: float) -> float | None:
        if self._work_callbacks:
            # Workers woken by callback: be subscribed before reading (free once subscribed).
            await self._redis.subscribe(self._redis.qkey(q, "work") for q in queues)
        times: list[float] = []
        for reply in await self._inspect(queues, now, "due"):
            due = NextDue.from_reply(reply)
            if due.claimable:
                return now
            times += [t for t in (due.first_scheduled, due.first_expiry) if t is not None]
        return min(times, default=None)

    # -- dead letters and inspection -------------------------------------------------------

    async def _dead_letters(self, queue: str, limit: int, offset: int) -> list[TaskRecord]:
        if limit <= 0:
            return []
        raw_ids = await self._redis.client.zrevrange(
            self._redis.qkey(queue, "dead"), offset, offset + limit - 1
        )
        ids = [i.decode() for i in raw_ids]
        for task_id in ids:
            if not is_task_id(task_id):
                self._routes.remember_queue(task_id, queue)
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
            if raw is None or status_of(raw[0]) != b"failed":
                continue
            old = message_of(raw[0])
            if old is None:
                logger.warning(
                    "cannot requeue dead letter %s: its stored message does not decode", task_ids[i]
                )
                continue
            new = msgspec.structs.replace(  # a flow node keeps its flow, not its parents
                old, id=new_id, requeued_from=old.id, eta=None, created_at=now, waits_for=[]
            )
            if not self._check_routing(new):
                by_index.append((new.id, new.queue))
            plans.append((i, new))
        if by_index:
            await self._routes.index_ids(by_index)
        if plans:
            await self._routes.register_queues(new.queue for _, new in plans)
            await self._index_flows([new for _, new in plans])
        groups = group_by_queue([new.queue for _, new in plans])
        for queue, idx in groups.items():
            picked = [(task_ids[plans[j][0]], plans[j][1]) for j in idx]
            for j, made in zip(idx, await self._requeue_in(queue, picked, now), strict=True):
                out[plans[j][0]] = made
        return out

    async def _requeue_in(
        self, queue: str, picked: list[tuple[str, TaskMessage]], now: float
    ) -> list[str | None]:
        """One ``requeue`` call for `queue`: each (dead letter's id, new message) of `picked`;
        per entry the new id, or None if the task was not dead-lettered."""
        args: list[Any] = [str(len(picked)), time_arg(now + self.result_ttl_s)]
        for old_id, new in picked:
            args += [
                old_id,
                new.id,
                queued_form(new, "queued", ""),
                str(new.priority),
                new.dedup_key or "",
                new.order_id or "",
                new.name,
                flow_wiring(new) if is_flow_message(new) else "",
            ]
        reply, outbox = split_outbox(
            await self._redis.run_queue_script("requeue", queue, now, args)
        )
        if outbox:
            await self._deliver([queue], now)
        return [new_id.decode() or None for new_id in reply]

    async def _stats(self, queues: Sequence[str], now: float) -> list[QueueStats]:
        facts = [QueueFacts.from_reply(r) for r in await self._inspect(queues, now, "stats")]
        return [
            QueueStats(
                queue=q,
                queued=f.queued,
                scheduled=f.scheduled,
                running=f.running,
                dead=f.dead,
                finished_last_minute=f.finished_last_minute,
                waiting=f.waiting,
            )
            for q, f in zip(queues, facts, strict=True)
        ]

    async def _purge(self, queue: str, error: ErrorInfo, now: float) -> int:
        rs = self._redis
        args = [time_arg(now + self.result_ttl_s), msgpack_encode(error), _PURGE_CHUNK, error.type]
        purged = 0
        while True:  # in chunks: one script call must not hold the server for long
            ended, outbox = split_outbox(await rs.run_queue_script("purge", queue, now, args))
            if outbox:
                await self._deliver([queue], now)
            for task_id in ended:
                rs.waiters.wake(task_id.decode())
            purged += len(ended)
            if len(ended) < _PURGE_CHUNK:
                return purged


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
        self.handed.extend(handed_off(data))
        self.callback()


def _log_unreadable(queue: str, task_ids: list[bytes]) -> None:
    """Say which tasks a claim failed because their stored form could not be read."""
    logger.error(
        "queue %r: %d task(s) could not be read from Redis and were failed as "
        "UndecodableMessage without running (see their error): %s",
        queue,
        len(task_ids),
        ", ".join(i.decode(errors="replace") for i in task_ids),
    )


def _call_each(callbacks: list[Callable[[], None]], message: bytes = b"") -> None:
    """Call every one of `callbacks` (the wake-ups of one work channel; its `message` says
    nothing more)."""
    for callback in callbacks:
        callback()
