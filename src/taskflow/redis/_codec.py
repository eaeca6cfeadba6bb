"""How the Redis backend's values travel: script arguments packed here, replies decoded here.

Times go to the scripts as exact text (`time_arg`); batches as one msgpack array (`frame`), binary
strings with msgpack "str" headers (`raw_str`: the msgpack library of Redis's Lua has no "bin"
type); a new task's queued form (`queued_form`, ``QF`` in ``lua/common.lua``); the hash fields
the ``get`` script reads (`RECORD_FIELDS`, `OUTCOME_FIELDS`) become `TaskRecord` / `TaskOutcome`;
outcome pushes and hand-off messages (``<len>:<bytes>`` strings) are unpacked; stream entries
become `Event`.

What does not live here: anything that talks to the server (``_storage.py``, ``_broker.py``)
or knows where keys are (``_routing.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from .._message import (
    CancelResult,
    Delivery,
    ErrorInfo,
    Event,
    EventKind,
    LeaseState,
    Outcome,
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
    "EMPTY_STR",
    "LEASE_CODES",
    "LEASE_EXPIRED",
    "NO_YIELDS",
    "OUTCOME_FIELDS",
    "OUTCOME_KEYS",
    "RECORD_FIELDS",
    "RawRecord",
    "complete_args",
    "enqueue_args",
    "event_from",
    "frame",
    "handed_off",
    "message_of",
    "msgpack_encode",
    "opt_float",
    "opt_text",
    "opt_time_arg",
    "outcome_from",
    "progress_text",
    "queued_form",
    "raw_str",
    "record_from",
    "status_of",
    "stream_cursor",
    "take_string",
    "time_arg",
    "unpack_push",
]

LEASE_EXPIRED: Final = msgspec.msgpack.encode(
    ErrorInfo(
        "LeaseExpired",
        "the worker running this task stopped renewing its lease (it died or stalled) and no "
        "attempt was left",
    )
)

CANCEL_CODES: Final = {
    b"cancelled": CancelResult.CANCELLED,
    b"requested": CancelResult.REQUESTED,
    b"already_terminal": CancelResult.ALREADY_TERMINAL,
    b"not_found": CancelResult.NOT_FOUND,
}

LEASE_CODES: Final = {0: LeaseState.LOST, 1: LeaseState.OK, 2: LeaseState.CANCEL}
#: A stored task as read: its hash fields and its yielded values.
RawRecord = tuple[list[bytes | None], list[bytes]]

#: The hash fields the ``get`` script reads, in the order of a `RawRecord`'s first element.
RECORD_FIELDS: Final = (
    "msg", "st", "att", "sa", "fa", "res", "err", "prog", "cr", "rx", "tok", "wid", "w", "y"
)  # fmt: skip

#: What the ``get`` script reads for `Storage.wait`, in this order.
OUTCOME_FIELDS: Final = ("st", "res", "err", "rx")

OUTCOME_KEYS: Final = tuple(name.encode() for name in OUTCOME_FIELDS)

NO_YIELDS: Final[list[bytes]] = []

_MSG, _ST, _ATT, _SA, _FA, _RES, _ERR, _PROG, _CR, _RX, _TOK, _WID = range(12)
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


def frame(items: list[str | msgspec.Raw]) -> bytes:
    """Pack a batch as one argument, a msgpack array of strings (``unframe`` in
    lua/common.lua). Binary strings go in as `raw_str`: the msgpack library of Redis's Lua has
    no "bin" type, and "str" is just bytes to Lua."""
    return msgpack_encode(items)


_FIXSTR: Final = tuple(bytes((0xA0 | size,)) for size in range(32))

EMPTY_STR: Final = msgspec.Raw(_FIXSTR[0])


def raw_str(data: bytes) -> msgspec.Raw:
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


def queued_form(m: TaskMessage, state: str, inbox: str) -> bytes:
    """The fields of a new task's queued form (``QF`` in lua/common.lua), packed here rather
    than by the server: a msgpack array."""
    fields = [
        raw_str(encode_message(m)),
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
    return msgpack_encode(fields)


def enqueue_args(messages: Sequence[TaskMessage], now: float, inbox: str) -> list[Any]:
    """The enqueue script's batch: per message its id, queued form, priority, due time,
    scheduled flag, dedup key, order id and name; `inbox` ('' for none) is registered on each."""
    args: list[str | msgspec.Raw] = []
    for m in messages:
        eta = m.eta
        scheduled = eta is not None and eta > now
        args += (
            m.id,
            raw_str(queued_form(m, "scheduled" if scheduled else "queued", inbox)),
            str(m.priority),
            time_arg(now if eta is None else eta),
            "1" if scheduled else "0",
            m.dedup_key or "",
            m.order_id or "",
            m.name,
        )
    return [frame(args)]


def complete_args(outcomes: Sequence[Outcome]) -> list[Any]:
    args: list[str | msgspec.Raw] = []
    for o in outcomes:
        error = o.error
        result = o.result
        args += (
            o.task_id,
            str(o.token),
            o.kind.value,
            EMPTY_STR if result is None else raw_str(result),
            EMPTY_STR if error is None else raw_str(msgpack_encode(error)),
            "" if error is None else error.type,
            opt_time_arg(o.retry_at),
            opt_time_arg(o.result_expires_at),
        )
    return [frame(args)]


def record_from(fields: list[bytes | None], yields: list[bytes], now: float) -> TaskRecord:
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


def _state(fields: list[bytes | None], now: float) -> dict[str, Any]:
    """The `TaskRecord` fields that change while a task lives, from `RECORD_FIELDS` values."""
    expires_at = opt_float(fields[_RX])
    expired = expires_at is not None and expires_at <= now
    err = fields[_ERR]
    prog = fields[_PROG]
    status = fields[_ST]
    return {
        "status": TaskStatus(status.decode() if status else "queued"),
        "attempts": int(fields[_ATT] or 0),
        "started_at": opt_float(fields[_SA]),
        "finished_at": opt_float(fields[_FA]),
        "result": None if expired else fields[_RES],
        "error": None if not err else _error_decoder.decode(err),
        "progress": None if not prog else _progress_decoder.decode(prog),
        "cancel_requested": fields[_CR] == b"1",
        "result_expires_at": expires_at,
        "result_expired": expired,
        "token": int(fields[_TOK] or 0),
        "worker_id": opt_text(fields[_WID]),
    }


def status_of(fields: list[bytes | None]) -> bytes | None:
    """The status field of `RECORD_FIELDS` values (None: unknown task)."""
    return fields[_ST]


def message_of(fields: list[bytes | None]) -> TaskMessage:
    """The task's message, from `RECORD_FIELDS` values."""
    return decode_message(fields[_MSG] or b"")


def handed_off(data: bytes) -> list[Delivery]:
    """The deliveries of a hand-off message (enqueue.lua): ``<len>:<lease expiry>``, then per
    task ``<len>:<id>`` and ``<len>:<message>``; each is a first attempt under token 1."""
    raw_lx, pos = take_string(data, 0)
    lease_until = float(raw_lx)
    deliveries = []
    end = len(data)
    while pos < end:
        raw_id, pos = take_string(data, pos)
        message, pos = take_string(data, pos)
        deliveries.append(Delivery(raw_id.decode(), 1, 1, message, lease_until))
    return deliveries


def take_string(data: bytes, pos: int) -> tuple[bytes, int]:
    """One ``<len>:<bytes>`` string at `pos`; returns it and the position after it."""
    colon = data.index(b":", pos)
    start = colon + 1
    end = start + int(data[pos:colon])
    return data[start:end], end


def take_count(data: bytes, pos: int) -> tuple[int, int]:
    semi = data.index(b";", pos)
    return int(data[pos:semi]), semi + 1


def unpack_push(data: bytes, pos: int) -> tuple[dict[bytes, bytes], list[bytes], int]:
    """The hash fields and yields of an outcome pushed by ``push_later`` (lua/common.lua), and
    the position after them."""
    n, pos = take_count(data, pos)
    flat: list[bytes] = []
    for _ in range(n):
        item, pos = take_string(data, pos)
        flat.append(item)
    n, pos = take_count(data, pos)
    yields: list[bytes] = []
    for _ in range(n):
        item, pos = take_string(data, pos)
        yields.append(item)
    return dict(zip(flat[::2], flat[1::2], strict=True)), yields, pos


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
    )
