"""How the Redis backend's values travel: script arguments packed here, replies decoded here.

Times go to the scripts as exact text (`time_arg`); everything else that is packed, both
ways, is one framing, msgpack (`pack`, `unpack`): the enqueue and complete batches, a new task's
queued form (`queued_form`, ``QF`` in ``lua/common.lua``), outcome pushes (`outcomes_pushed`)
and hand-offs (`handed_off`). Replies become named values: the hash fields the ``get`` script
reads (`RECORD_FIELDS`, `OUTCOME_FIELDS`) a `TaskRecord` / `TaskOutcome`, a claim's reply its
deliveries (`deliveries_from`), an enqueue's its results (`enqueued_from`), ``inspect``'s a
`QueueFacts` or `NextDue`; stream entries become `Event`.

What does not live here: anything that talks to the server (``_storage.py``, ``_broker.py``)
or knows where keys are (``_routing.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, NamedTuple, cast

import msgpack  # type: ignore[import-untyped]
import msgspec

from .._message import LEASE_EXPIRED as _LEASE_EXPIRED_ERROR
from .._message import (
    CancelResult,
    Delivery,
    EnqueueResult,
    ErrorInfo,
    Event,
    EventKind,
    FailedAttempt,
    LeaseState,
    Outcome,
    OutcomeKind,
    Progress,
    TaskMessage,
    TaskOutcome,
    TaskRecord,
    TaskStatus,
    decode_message,
    encode_message,
)

__all__ = [
    "CANCEL_CODES",
    "LEASE_CODES",
    "LEASE_EXPIRED",
    "NO_YIELDS",
    "OUTCOME_FIELDS",
    "RECORD_FIELDS",
    "NextDue",
    "QueueFacts",
    "RawRecord",
    "complete_args",
    "deliveries_from",
    "enqueue_args",
    "enqueued_from",
    "event_from",
    "failed_from",
    "flow_wiring",
    "handed_off",
    "is_flow_message",
    "message_of",
    "msgpack_encode",
    "opt_float",
    "opt_text",
    "opt_time_arg",
    "outcome_from",
    "outcomes_pushed",
    "pack",
    "progress_text",
    "queued_form",
    "record_from",
    "split_outbox",
    "status_of",
    "stream_cursor",
    "time_arg",
    "undecodable_record",
    "unpack",
]

#: The error stored on a task dead-lettered because its last lease lapsed, encoded.
LEASE_EXPIRED: Final = msgspec.msgpack.encode(_LEASE_EXPIRED_ERROR)

CANCEL_CODES: Final = {
    b"cancelled": CancelResult.CANCELLED,
    b"requested": CancelResult.REQUESTED,
    b"already_terminal": CancelResult.ALREADY_TERMINAL,
    b"not_found": CancelResult.NOT_FOUND,
}

LEASE_CODES: Final = {0: LeaseState.LOST, 1: LeaseState.OK, 2: LeaseState.CANCEL}
#: A stored task as read: its hash fields and its yielded values.
RawRecord = tuple[list[bytes | None], list[bytes]]

#: The hash fields the ``get`` script reads, in the order of a `RawRecord`'s first element:
#: the state, then copies of message fields a record can be shown with if its message does not
#: decode (name, priority, retries, order id, dedup key, no-result flag).
RECORD_FIELDS: Final = (
    "msg", "st", "att", "sa", "fa", "res", "err", "prog", "cr", "rx", "tok", "wid", "w", "y",
    "n", "pr", "rt", "oid", "dk", "nr",
)  # fmt: skip

#: What the ``get`` script reads for `Storage.wait`, in this order.
OUTCOME_FIELDS: Final = ("st", "res", "err", "rx")


NO_YIELDS: Final[list[bytes]] = []

_MSG, _ST, _ATT, _SA, _FA, _RES, _ERR, _PROG, _CR, _RX, _TOK, _WID, _W, _Y = range(14)
_NAME, _PR, _RT, _OID, _DK, _NR = range(14, 20)
_error_decoder: Final = msgspec.msgpack.Decoder(ErrorInfo)

msgpack_encode: Final = msgspec.msgpack.Encoder().encode

_progress_decoder: Final = msgspec.msgpack.Decoder(Progress)


def time_arg(value: float) -> str:
    """A time as exact text for the scripts (repr round-trips a float)."""
    return repr(float(value))


def opt_time_arg(value: float | None) -> str:
    return "" if value is None else time_arg(value)


def opt_float(raw: bytes | None) -> float | None:
    return None if raw is None or raw == b"" else float(raw)


def opt_text(raw: bytes | None) -> str | None:
    return None if raw is None or raw == b"" else raw.decode()


def stream_cursor(after: str) -> str:
    """`after` checked to be a stream entry id (``<ms>-<seq>``), the cursor of a Redis event."""
    ms, dash, seq = after.partition("-")
    if not (dash and ms.isdigit() and seq.isdigit()):
        raise ValueError(
            f"event cursor {after!r} is not a Redis event cursor (a stream id like "
            "'1700000000000-0'): pass the `cursor` of an Event read from this backend, None to "
            "start at the oldest kept event, or taskflow.abc.LATEST for only what comes next"
        )
    return after


def progress_text(progress: Progress | None) -> str:
    if progress is None:
        return ""
    total = "?" if progress.total is None else str(progress.total)
    return f"{progress.done}/{total}"


def pack(items: list[Any]) -> bytes:
    """`items` as one msgpack array, bytes with "str" headers: how everything the scripts unpack
    travels (``unframe`` in lua/common.lua). The msgpack library of Redis's Lua has no "bin"
    type, and "str" is just bytes to Lua."""
    return cast(bytes, msgpack.packb(items, use_bin_type=False))


def unpack(data: bytes) -> Any:
    """What a script packed with ``cmsgpack.pack``, its strings as bytes."""
    return msgpack.unpackb(data, raw=True)


def queued_form(m: TaskMessage, state: str, inbox: str) -> bytes:
    """The fields of a new task's queued form (``QF`` in lua/common.lua), packed here rather
    than by the server."""
    return pack(
        [
            encode_message(m),
            state,
            str(m.priority),
            str(m.retries),
            m.dedup_key or "",
            opt_time_arg(m.dedup_ttl_s),
            m.order_id or "",
            "" if m.store_result else "1",
            inbox,
            m.name,
        ]
    )


def is_flow_message(m: TaskMessage) -> bool:
    """Whether `m` has flow fields (a flow id, parents, children, an `outcome_to` task, or is
    a copy): such a task is stored with its wiring (`flow_wiring`)."""
    return bool(m.flow_id or m.waits_for or m.children or m.outcome_to or m.copy)


def flow_wiring(m: TaskMessage) -> bytes:
    """What the scripts need of a flow message's links, packed (``FX`` in lua/common.lua):
    flow id, node, children (id, queue, id, queue, ...), failure policy, `outcome_to`, copy
    flag, how many distinct parents it waits for, eta and creation time. A copy's `children`
    are not its own (the task it copies tells them), so they are left out."""
    children = [] if m.copy else [x for child in m.children for x in child]
    return pack(
        [
            m.flow_id or "",
            m.node or "",
            children,
            m.after_failure.value,
            m.outcome_to or "",
            "1" if m.copy else "",
            str(len(set(m.waits_for))),
            opt_time_arg(m.eta),
            time_arg(m.created_at),
        ]
    )


def split_outbox(reply: list[Any]) -> tuple[list[Any], bool]:
    """A script's reply without its outbox marker (``with_outbox`` in lua/common.lua), and
    whether it had one: the call left deliveries to children of other queues in the outbox."""
    if reply and isinstance(reply[-1], list):
        return reply[:-1], True
    return reply, False


def enqueue_args(
    messages: Sequence[TaskMessage], now: float, inbox: str, result_expires_at: float
) -> list[Any]:
    """The enqueue script's batch: per message its id, queued form, priority, due time,
    scheduled flag, dedup key, order id and name; `inbox` ('' for none) is registered on each.
    Only if some message has flow fields, then: the result expiry of tasks the call ends (a
    hedge copy whose task ended already) and each message's flow wiring ('' for a plain one)."""
    args: list[str | bytes] = []
    wiring: list[bytes | str] = []
    for m in messages:
        eta = m.eta
        scheduled = eta is not None and eta > now
        args += (
            m.id,
            queued_form(m, "scheduled" if scheduled else "queued", inbox),
            str(m.priority),
            time_arg(now if eta is None else eta),
            "1" if scheduled else "0",
            m.dedup_key or "",
            m.order_id or "",
            m.name,
        )
        if is_flow_message(m):
            wiring += [""] * (len(args) // 8 - 1 - len(wiring))
            wiring.append(flow_wiring(m))
    if not wiring:
        return [pack(args)]
    wiring += [""] * (len(messages) - len(wiring))
    return [pack(args), time_arg(result_expires_at), pack(wiring)]


def enqueued_from(reply: list[Any]) -> list[EnqueueResult]:
    """The enqueue script's reply: per message the id standing for it and 1 if created."""
    return [
        EnqueueResult(task_id.decode(), bool(created)) for task_id, created in _in_groups(reply, 2)
    ]


def complete_args(
    outcomes: Sequence[Outcome], errors_maxlen: int, wait_expires_at: float | None = None
) -> list[Any]:
    """The complete script's batch: per outcome its id, token, kind, result, error, error type,
    retry time and result expiry ('' for none; `wait_expires_at` for a WAIT without one, which
    ends the task CANCELLED if its cancel was requested); then the error log's length."""
    args: list[str | bytes] = []
    for o in outcomes:
        expires_at = o.result_expires_at
        if expires_at is None and o.kind is OutcomeKind.WAIT:
            expires_at = wait_expires_at
        error = o.error
        result = o.result
        args += (
            o.task_id,
            str(o.token),
            o.kind.value,
            b"" if result is None else result,
            b"" if error is None else msgpack_encode(error),
            "" if error is None else error.type,
            opt_time_arg(o.retry_at),
            opt_time_arg(expires_at),
        )
    return [pack(args), str(errors_maxlen)]


def record_from(
    task_id: str, queue: str, fields: list[bytes | None], yields: list[bytes], now: float
) -> TaskRecord:
    """A `TaskRecord` from the `RECORD_FIELDS` values the ``get`` script read for task `task_id`
    of `queue`; one whose stored message (or state) does not decode is shown as far as it can be,
    marked `undecodable` (`undecodable_record`), never an error."""
    try:
        msg = decode_message(fields[_MSG] or b"")
        state = _state(fields, now)
    except (ValueError, TypeError):  # msgspec's errors are ValueErrors
        return undecodable_record(task_id, queue, fields, yields, now)
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
        flow_id=msg.flow_id,
        node=msg.node,
        waits_for=msg.waits_for,
        outcome_to=msg.outcome_to,
        copy=msg.copy,
        payload=msg.payload,
        **state,
    )


def undecodable_record(
    task_id: str, queue: str, fields: list[bytes | None], yields: list[bytes], now: float
) -> TaskRecord:
    """The record of a task whose stored message (or another field) does not decode: every
    field that does, from the hash (its state, and the copies of name, priority, retries, order
    id and dedup key kept beside the message), the others at their defaults; `undecodable`."""
    state = {
        name: _decoded_or(read, fields, now, _STATE_DEFAULTS[name]) for name, read in _STATE.items()
    }
    return TaskRecord(
        id=task_id,
        name=_decoded_or(lambda f, now: (f[_NAME] or b"").decode(), fields, now, ""),
        queue=queue,
        priority=_decoded_or(lambda f, now: int(f[_PR] or 0), fields, now, 0),
        retries=_decoded_or(lambda f, now: int(f[_RT] or 0), fields, now, 0),
        yields=yields,
        order_id=_decoded_or(lambda f, now: opt_text(f[_OID]), fields, now, None),
        dedup_key=_decoded_or(lambda f, now: opt_text(f[_DK]), fields, now, None),
        store_result=fields[_NR] != b"1",
        undecodable=True,
        **state,
    )


#: The `TaskRecord` fields `_state` reads, with the value shown when one does not decode.
_STATE_DEFAULTS: Final[dict[str, Any]] = {
    "status": TaskStatus.QUEUED,
    "attempts": 0,
    "started_at": None,
    "finished_at": None,
    "result": None,
    "error": None,
    "progress": None,
    "cancel_requested": False,
    "result_expires_at": None,
    "result_expired": False,
    "token": 0,
    "worker_id": None,
}


def _decoded_or(
    read: Callable[[list[bytes | None], float], Any],
    fields: list[bytes | None],
    now: float,
    default: Any,
) -> Any:
    """`read(fields, now)`, or `default` if what it reads does not decode."""
    try:
        return read(fields, now)
    except (ValueError, TypeError):
        return default


def outcome_from(task_id: str, values: list[bytes | None], now: float) -> TaskOutcome:
    """A `TaskOutcome` from the `OUTCOME_FIELDS` values the ``get`` script read."""
    status, result, err, rx = values
    expires_at = opt_float(rx)
    expired = expires_at is not None and expires_at <= now
    return TaskOutcome(
        id=task_id,
        status=TaskStatus(status.decode() if status else "queued"),
        result=None if expired else result,
        error=None if not err else _error_decoder.decode(err),
        result_expires_at=expires_at,
        result_expired=expired,
    )


def _expired(fields: list[bytes | None], now: float) -> bool:
    expires_at = opt_float(fields[_RX])
    return expires_at is not None and expires_at <= now


def _status(fields: list[bytes | None], now: float) -> TaskStatus:
    status = fields[_ST]
    return TaskStatus(status.decode() if status else "queued")


def _error(fields: list[bytes | None], now: float) -> ErrorInfo | None:
    err = fields[_ERR]
    return None if not err else _error_decoder.decode(err)


def _progress(fields: list[bytes | None], now: float) -> Progress | None:
    prog = fields[_PROG]
    return None if not prog else _progress_decoder.decode(prog)


#: How each `TaskRecord` field that changes while a task lives is read from `RECORD_FIELDS`
#: values (at time `now`), one by one, so a record can show the ones that decode.
_STATE: Final[dict[str, Callable[[list[bytes | None], float], Any]]] = {
    "status": _status,
    "attempts": lambda f, now: int(f[_ATT] or 0),
    "started_at": lambda f, now: opt_float(f[_SA]),
    "finished_at": lambda f, now: opt_float(f[_FA]),
    "result": lambda f, now: None if _expired(f, now) else f[_RES],
    "error": _error,
    "progress": _progress,
    "cancel_requested": lambda f, now: f[_CR] == b"1",
    "result_expires_at": lambda f, now: opt_float(f[_RX]),
    "result_expired": _expired,
    "token": lambda f, now: int(f[_TOK] or 0),
    "worker_id": lambda f, now: opt_text(f[_WID]),
}


def _state(fields: list[bytes | None], now: float) -> dict[str, Any]:
    """The `TaskRecord` fields that change while a task lives, from `RECORD_FIELDS` values."""
    return {name: read(fields, now) for name, read in _STATE.items()}


def status_of(fields: list[bytes | None]) -> bytes | None:
    """The status field of `RECORD_FIELDS` values (None: unknown task)."""
    return fields[_ST]


def message_of(fields: list[bytes | None]) -> TaskMessage | None:
    """The task's message, from `RECORD_FIELDS` values; None if it does not decode."""
    try:
        return decode_message(fields[_MSG] or b"")
    except msgspec.DecodeError:
        return None


def _in_groups(values: list[Any], size: int) -> Iterator[tuple[Any, ...]]:
    """`values` in consecutive tuples of `size` (a flat reply of fixed-size entries)."""
    it = iter(values)
    return zip(*[it] * size, strict=True)


def handed_off(data: bytes) -> list[Delivery]:
    """The deliveries of a hand-off message (lua/enqueue.lua): {lease expiry, id, message, id,
    message, ...}; each is a first attempt under token 1."""
    raw_lx, *pairs = unpack(data)
    lease_until = float(raw_lx)
    return [
        Delivery(raw_id.decode(), 1, 1, message, lease_until)
        for raw_id, message in _in_groups(pairs, 2)
    ]


def outcomes_pushed(data: bytes) -> list[tuple[str, list[bytes | None] | None]]:
    """The outcomes of a push to an inbox (``push_later`` in lua/common.lua): per task its id
    and its `OUTCOME_FIELDS` values (None where there is none), or None for an outcome too
    large to push (the task ended: read it)."""
    return [_pushed(entry) for entry in unpack(data)]


def _pushed(entry: list[bytes]) -> tuple[str, list[bytes | None] | None]:
    if len(entry) == 2:  # {id, status}: ended, too large to push
        return entry[0].decode(), None
    raw_id, status, result, error, expires = entry
    return raw_id.decode(), [status, result or None, error or None, expires or None]


def deliveries_from(reply: list[Any], lease_until: float) -> list[Delivery]:
    """The claim script's reply: per delivery its id, token, attempt and message."""
    return [
        Delivery(
            task_id=task_id.decode(),
            token=int(token),
            attempt=int(attempt),
            data=message,
            lease_expires_at=lease_until,
        )
        for task_id, token, attempt, message in _in_groups(reply, 4)
    ]


class NextDue(NamedTuple):
    """What the ``inspect`` script says of a queue for an idle worker (its ``due`` mode)."""

    #: A ready level is listed: claimable work (or a level a claim has yet to find empty).
    claimable: bool
    #: The earliest due time of a scheduled task, and lease expiry of a running one.
    first_scheduled: float | None
    first_expiry: float | None

    @classmethod
    def from_reply(cls, reply: list[Any]) -> NextDue:
        listed, first_sched, first_run = reply
        return cls(bool(listed), opt_float(first_sched), opt_float(first_run))


class QueueFacts(NamedTuple):
    """What the ``inspect`` script says of a queue, in the order of its reply."""

    queued: int
    scheduled: int
    running: int
    dead: int
    #: The earliest due time of a scheduled task, and lease expiry of a running one.
    first_scheduled: float | None
    first_expiry: float | None
    #: Entries in the ready sets (lapsed leases waiting for re-delivery included).
    ready: int
    #: Tasks ended in the minute before now.
    finished_last_minute: int
    #: Tasks waiting for their parents or their join (flows).
    waiting: int

    @classmethod
    def from_reply(cls, reply: list[Any]) -> QueueFacts:
        queued, scheduled, running, dead, first_sched, first_run, ready, finished, waiting = reply
        return cls(
            int(queued),
            int(scheduled),
            int(running),
            int(dead),
            opt_float(first_sched),
            opt_float(first_run),
            int(ready),
            int(finished),
            int(waiting),
        )


def failed_from(queue: str, fields: dict[bytes, bytes]) -> FailedAttempt:
    """A failed attempt from an entry of the queue's error log (written by ``complete.lua``)."""
    return FailedAttempt(
        at=float(fields[b"t"]),
        task_id=fields[b"i"].decode(),
        name=fields[b"n"].decode(),
        queue=queue,
        attempt=int(fields[b"a"]),
        worker_id=opt_text(fields.get(b"w")),
        error=_error_decoder.decode(fields[b"e"]),
        retried=fields[b"r"] == b"1",
    )


def event_from(queue: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    return Event(
        cursor=entry_id.decode(),
        task_id=fields[b"i"].decode(),
        queue=queue,
        kind=EventKind(fields[b"k"].decode()),
        at=float(fields[b"t"]),
        attempt=int(fields.get(b"a", b"0")),
        order_id=opt_text(fields.get(b"o")),
        detail=opt_text(fields.get(b"d")),
        name=fields.get(b"n", b"").decode(),
        flow_id=opt_text(fields.get(b"f")),
    )
