"""Rows to structs and structs to statement arguments, for the PostgreSQL backend.

What lives here: reading a row into a `TaskRecord`, `Event`, `QueueStats`, `LeaseInfo` or
`Versioned` (and the columns a record is read from, `TASK_RECORD_COLUMNS`); turning a batch
(messages, outcomes, progress updates) into the parallel arrays its statement unnests; the
encoded errors and progress the tables hold; event cursors.

What does not live here: the statements (``_sql_*.py``), running them (the storage, broker and
coordination), notification payloads (``_listener.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeVar

import msgspec

from ..abc import LEASE_EXPIRED as LEASE_EXPIRED_ERROR
from ..abc import (
    ErrorInfo,
    Event,
    EventKind,
    FailedAttempt,
    LeaseInfo,
    LockHolder,
    LockMode,
    LockState,
    LockWaiter,
    Outcome,
    Progress,
    ProgressUpdate,
    QueueStats,
    TaskMessage,
    TaskRecord,
    TaskStatus,
    Versioned,
    decode_message,
    encode_message,
)

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "LEASE_EXPIRED",
    "MAX_LISTED_EVENTS",
    "TASK_RECORD_COLUMNS",
    "Attempt",
    "EventCursor",
    "ReportBatch",
    "complete_columns",
    "encode_error",
    "enqueue_columns",
    "event",
    "events_after",
    "flow_columns",
    "lease_info",
    "lock_states",
    "message_or_none",
    "parse_cursor",
    "queue_stats",
    "report_batch",
    "task_record",
    "versioned",
]

logger = logging.getLogger("taskflow.postgres")

_encoder: Final = msgspec.msgpack.Encoder()
_json: Final = msgspec.json.Encoder()
_error_decoder: Final = msgspec.msgpack.Decoder(ErrorInfo)
_progress_decoder: Final = msgspec.msgpack.Decoder(Progress)

#: The error of a task dead-lettered by a claim because its lease lapsed with no attempt left
#: (`taskflow.abc.LEASE_EXPIRED`, encoded once).
LEASE_EXPIRED: Final = _encoder.encode(LEASE_EXPIRED_ERROR)

#: The columns `task_record` reads, in a statement's select list.
TASK_RECORD_COLUMNS: Final = (
    "id, name, queue, status, priority, attempts, retries, created_at, eta, started_at, "
    "finished_at, result, error, progress, yields, parent_id, order_id, requeued_from, "
    "dedup_key, store_result, cancel_requested, result_expires_at, token, worker_id, "
    "flow_id, node, waits_for, outcome_to, is_copy, data"
)


def encode_error(error: ErrorInfo | None) -> bytes | None:
    """An error as the ``error`` column holds it."""
    return None if error is None else _encoder.encode(error)


# --- rows to structs ----------------------------------------------------------------------------


def task_record(row: asyncpg.Record, now: float) -> TaskRecord:
    """A row of `TASK_RECORD_COLUMNS` as a `TaskRecord`, its result hidden once expired at
    `now`."""
    expires = row["result_expires_at"]
    expired = expires is not None and expires <= now
    damaged: list[str] = []
    error = _decoded(_error_decoder, row, "error", damaged)
    progress = _decoded(_progress_decoder, row, "progress", damaged)
    return TaskRecord(
        id=row["id"],
        name=row["name"],
        queue=row["queue"],
        status=TaskStatus(row["status"]),
        priority=row["priority"],
        attempts=row["attempts"],
        retries=row["retries"],
        created_at=row["created_at"],
        eta=row["eta"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        result=None if expired else row["result"],
        error=error,
        progress=progress,
        yields=list(row["yields"]),
        parent_id=row["parent_id"],
        order_id=row["order_id"],
        requeued_from=row["requeued_from"],
        dedup_key=row["dedup_key"],
        store_result=row["store_result"],
        cancel_requested=row["cancel_requested"],
        result_expires_at=expires,
        result_expired=expired,
        token=row["token"],
        worker_id=row["worker_id"],
        undecodable=bool(damaged),
        flow_id=row["flow_id"],
        node=row["node"],
        waits_for=list(row["waits_for"] or ()),
        outcome_to=row["outcome_to"],
        copy=row["is_copy"],
        payload=_payload(row["data"]),
    )


def _payload(data: bytes) -> bytes | None:
    """The arguments of the stored message `data`, or None if it does not decode (the
    record's other columns are shown all the same)."""
    try:
        return decode_message(data).payload
    except (ValueError, TypeError):  # msgspec's errors are ValueErrors
        return None


T = TypeVar("T")


def _decoded(
    decoder: msgspec.msgpack.Decoder[T], row: asyncpg.Record, column: str, damaged: list[str]
) -> T | None:
    """`row[column]` decoded (NULL is None). Damaged bytes in the store give None and add
    `column` to `damaged` (the record is then marked `undecodable`), never an error for the
    reader."""
    raw = row[column]
    if raw is None:
        return None
    try:
        return decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        damaged.append(column)
        return None


def event(row: asyncpg.Record, cursor: str) -> Event:
    """A row of the ``events`` table as an `Event` with `cursor`."""
    return Event(
        cursor=cursor,
        task_id=row["task_id"],
        queue=row["queue"],
        kind=EventKind(row["kind"]),
        at=row["at"],
        attempt=row["attempt"],
        order_id=row["order_id"],
        detail=row["detail"],
        name=row["name"],
        flow_id=row["flow_id"],
    )


def failed_attempt(row: asyncpg.Record) -> FailedAttempt:
    """A row of the ``errors`` table (the error log) as a `FailedAttempt`."""
    return FailedAttempt(
        at=row["at"],
        task_id=row["task_id"],
        name=row["name"],
        queue=row["queue"],
        attempt=row["attempt"],
        worker_id=row["worker_id"],
        error=_error_decoder.decode(row["error"]),
        retried=row["retried"],
    )


def queue_stats(row: asyncpg.Record) -> QueueStats:
    """A row of the stats statement as `QueueStats`."""
    return QueueStats(
        queue=row["queue"],
        queued=row["queued"],
        scheduled=row["scheduled"],
        running=row["running"],
        dead=row["dead"],
        finished_last_minute=row["finished_last_minute"],
        waiting=row["waiting"],
    )


def lease_info(name: str, row: asyncpg.Record) -> LeaseInfo:
    """A row of the ``leases`` table as the `LeaseInfo` of lease `name`."""
    return LeaseInfo(
        name=name, owner=row["owner"], token=row["token"], expires_at=row["expires_at"]
    )


_LOCK_MODES: Final = {"S": LockMode.SHARED, "X": LockMode.EXCLUSIVE}


def lock_states(rows: Sequence[asyncpg.Record]) -> list[LockState]:
    """Rows of the ``lock_entries`` table, sorted by name, holders first, waiters in queue order,
    as one `LockState` per name."""
    states: list[LockState] = []
    for row in rows:
        if not states or states[-1].name != row["name"]:
            states.append(LockState(name=row["name"], holders=[], waiters=[]))
        mode = _LOCK_MODES[row["mode"]]
        if row["held"]:
            states[-1].holders.append(
                LockHolder(
                    owner=row["owner"], mode=mode, token=row["token"], expires_at=row["expires_at"]
                )
            )
        else:
            states[-1].waiters.append(
                LockWaiter(
                    owner=row["owner"], mode=mode, since=row["since"], expires_at=row["expires_at"]
                )
            )
    return states


def versioned(row: asyncpg.Record) -> Versioned:
    """A row of the ``kv`` table as a `Versioned` value."""
    return Versioned(bytes(row["value"]), int(row["version"]))


def message_or_none(data: bytes) -> TaskMessage | None:
    """A stored message, or None (logged) if it does not decode."""
    try:
        return decode_message(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        logger.warning("cannot requeue a dead letter whose message does not decode")
        return None


#: Most events of younger transactions a cursor lists (see `EventCursor`); past that a
#: reader waits for the final order to pass them.
MAX_LISTED_EVENTS: Final = 1000

Position = tuple[int, int]
"""An event's place in the read order: (its transaction, its id)."""


class EventCursor(NamedTuple):
    """Where a reader of a queue's events stands.

    Events are read in (transaction, id) order. `position` is the last event read of the part
    of that order that is final (events of transactions older than any still in progress);
    `listed` holds the events read beyond it (committed by younger transactions while an older
    one was still in progress), each read once, until the position passes them. A cursor is
    ``"<transaction>.<id>"``, then ``"+<transaction>.<id>"`` per listed event; one of the
    form older versions made, an id alone, has no transaction (`xact_known` False).
    """

    position: Position
    listed: tuple[Position, ...] = ()
    xact_known: bool = True

    def __str__(self) -> str:
        return "+".join(f"{xact}.{event_id}" for xact, event_id in (self.position, *self.listed))

    @property
    def listed_ids(self) -> list[int]:
        """The ids of the listed events."""
        return [event_id for _, event_id in self.listed]

    @property
    def may_list(self) -> bool:
        """Whether a read may list more events beyond the position (see `MAX_LISTED_EVENTS`)."""
        return len(self.listed) < MAX_LISTED_EVENTS

    def past(self, row: asyncpg.Record) -> EventCursor:
        """The cursor right after the event read in `row` (its ``final`` column says which
        part of the order it came from)."""
        place = (int(row["xact"]), row["id"])
        if row["final"]:
            return EventCursor(place, tuple(p for p in self.listed if p > place))
        return EventCursor(self.position, (*self.listed, place))


def parse_cursor(after: str | None) -> EventCursor:
    """An event cursor (see `EventCursor`) as its parts; None: before the first event.

    Raises:
        ValueError: `after` is not a cursor of this backend.
    """
    if after is None:
        return EventCursor((0, 0))
    try:
        if "." not in after:
            return EventCursor((0, int(after)), xact_known=False)
        places = [part.split(".") for part in after.split("+")]
        position, *listed = [(int(xact), int(event_id)) for xact, event_id in places]
    except ValueError:
        raise ValueError(
            f"event cursor {after!r} is not a PostgreSQL event cursor: pass the `cursor` of an "
            "Event read from this backend, None to start at the oldest kept event, or "
            "taskflow.abc.LATEST for only what comes next"
        ) from None
    return EventCursor(position, tuple(listed))


def events_after(rows: Sequence[asyncpg.Record], cursor: EventCursor) -> list[Event]:
    """The events read in `rows` (final part first, each in order), each with its cursor."""
    events = []
    for row in rows:
        cursor = cursor.past(row)
        events.append(event(row, str(cursor)))
    return events


# --- batches to statement arguments -------------------------------------------------------------


def enqueue_columns(messages: Sequence[TaskMessage]) -> list[list[Any]]:
    """The parallel arrays of the enqueue statement ($1..$15), one item per message (its flow
    fields are `flow_columns`)."""
    return [
        [m.id for m in messages],
        [m.name for m in messages],
        [m.queue for m in messages],
        [encode_message(m) for m in messages],
        [m.priority for m in messages],
        [m.eta for m in messages],
        [m.created_at for m in messages],
        [m.retries for m in messages],
        [m.expires_at for m in messages],
        [m.dedup_key for m in messages],
        [m.dedup_ttl_s for m in messages],
        [m.store_result for m in messages],
        [m.parent_id for m in messages],
        [m.order_id for m in messages],
        [m.requeued_from for m in messages],
    ]


#: What `flow_columns` gives for a batch without a flow field: NULL arrays, which the
#: statement's ``unnest`` reads as NULLs for every message.
_NO_FLOW: Final[list[list[Any] | None]] = [None] * 7


def flow_columns(messages: Sequence[TaskMessage]) -> list[list[Any] | None]:
    """The flow fields of a batch for the enqueue statement ($18..$24): flow id, node, parents
    and children (JSON arrays of ids, NULL when empty), failure policy, outcome_to, copy. A
    batch with no flow field sends seven NULLs instead (a plain batch pays nothing more)."""
    if not any(
        m.flow_id or m.node or m.waits_for or m.children or m.outcome_to or m.copy for m in messages
    ):
        return _NO_FLOW
    return [
        [m.flow_id for m in messages],
        [m.node for m in messages],
        [_json_ids(m.waits_for) for m in messages],
        [_json_ids([child for child, _queue in m.children]) for m in messages],
        [m.after_failure.value if m.waits_for else None for m in messages],
        [m.outcome_to for m in messages],
        [m.copy for m in messages],
    ]


def _json_ids(ids: Sequence[str]) -> str | None:
    """Task ids as a JSON array, None if there are none."""
    return _json.encode(list(ids)).decode() if ids else None


def complete_columns(outcomes: Sequence[Outcome]) -> list[list[Any]]:
    """The parallel arrays of the complete statement ($1..$8), one item per outcome."""
    return [
        [o.task_id for o in outcomes],
        [o.token for o in outcomes],
        [o.kind.value for o in outcomes],
        [o.result for o in outcomes],
        [encode_error(o.error) for o in outcomes],
        [o.retry_at for o in outcomes],
        [o.result_expires_at for o in outcomes],
        [_event_detail(o) for o in outcomes],
    ]


def _event_detail(outcome: Outcome) -> str | None:
    """An outcome's event detail: the error's type (for a release: why it was given back, if
    it says, e.g. ``WaitingForLock``)."""
    if outcome.error is None:
        return None
    return outcome.error.type


class Attempt(NamedTuple):
    """One attempt of a task: what a fencing token is checked against."""

    task_id: str
    token: int


class ReportBatch(NamedTuple):
    """Progress updates merged per attempt (an UPDATE touches a row once), as the report
    statement's arguments."""

    attempts: list[Attempt]
    columns: list[list[Any]]  # $1..$6: id, token, progress, its detail, yields, their owner


def report_batch(updates: Sequence[ProgressUpdate]) -> ReportBatch:
    """Merge `updates` per attempt: the newest progress, every yield in order. A yield's owner
    is the position (from 1) of its attempt in `ReportBatch.attempts`."""
    progress: dict[Attempt, Progress | None] = {}
    yields: dict[Attempt, list[bytes]] = {}
    for u in updates:
        attempt = Attempt(u.task_id, u.token)
        progress[attempt] = u.progress or progress.get(attempt)
        yields.setdefault(attempt, []).extend(u.yields)
    attempts = list(progress)
    yield_values: list[bytes] = []
    yield_owners: list[int] = []
    for ordinal, attempt in enumerate(attempts, start=1):
        yield_values += yields[attempt]
        yield_owners += [ordinal] * len(yields[attempt])
    newest = [progress[a] for a in attempts]
    columns: list[list[Any]] = [
        [a.task_id for a in attempts],
        [a.token for a in attempts],
        [None if p is None else _encoder.encode(p) for p in newest],
        [None if p is None else _progress_detail(p) for p in newest],
        yield_values,
        yield_owners,
    ]
    return ReportBatch(attempts, columns)


def _progress_detail(progress: Progress) -> str:
    total = "?" if progress.total is None else str(progress.total)
    return f"{progress.done}/{total}"
