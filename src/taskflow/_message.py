"""Wire structs shared by the producer, the workers and every backend, and their codecs.

Everything here is a `msgspec.Struct` encoded as msgpack; there is no pickle anywhere. Schema
evolution follows msgspec's rules: a new field goes at the end with a default, and no field is
ever retyped. `TaskMessage` is what travels through the broker; `TaskRecord` is what the storage
knows about a task; `Outcome`, `Delivery` and the rest are the vocabulary of `taskflow.abc`.
"""

from __future__ import annotations

import enum
import sys
from typing import Any, Final

import msgspec

__all__ = [
    "LEASE_EXPIRED",
    "SKIPPED",
    "SUPERSEDED",
    "TERMINAL_STATUSES",
    "UPSTREAM_FAILED",
    "CancelResult",
    "Checkpoint",
    "Delivery",
    "EnqueueResult",
    "ErrorInfo",
    "Event",
    "EventKind",
    "FailedAttempt",
    "FailurePolicy",
    "Hedge",
    "Lease",
    "LeaseInfo",
    "LeaseState",
    "LockHold",
    "LockHolder",
    "LockMode",
    "LockRequest",
    "LockState",
    "LockWaiter",
    "Outcome",
    "OutcomeKind",
    "Progress",
    "ProgressUpdate",
    "QueueStats",
    "TaskMessage",
    "TaskOutcome",
    "TaskRecord",
    "TaskStatus",
    "Versioned",
    "WorkerInfo",
    "decode_failed",
    "decode_message",
    "decode_value",
    "decode_worker",
    "encode_failed",
    "encode_message",
    "encode_value",
    "encode_worker",
]


class TaskStatus(str, enum.Enum):
    """Where a task is in its life. Done, failed, cancelled and expired are terminal and never
    change again."""

    QUEUED = "queued"
    """Waiting to be claimed."""
    SCHEDULED = "scheduled"
    """Waiting for its `eta` (a delayed task)."""
    RUNNING = "running"
    """Claimed by a worker under a lease."""
    RETRYING = "retrying"
    """Failed an attempt; waiting for its next one."""
    DONE = "done"
    """Finished with a value."""
    FAILED = "failed"
    """Dead-lettered: retries spent, or an error that is not retried."""
    CANCELLED = "cancelled"
    """Cancelled before it finished."""
    EXPIRED = "expired"
    """Not started before its `expires` time, so never run."""
    WAITING = "waiting"
    """Waiting for other tasks to end: a flow node whose parents (`TaskMessage.waits_for`)
    have not all ended, or a task whose run ended with `OutcomeKind.WAIT` and whose outcome
    will be that of the task linked to it (`TaskMessage.outcome_to`), such as its join."""

    @property
    def terminal(self) -> bool:
        """True for done, failed, cancelled and expired."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: Final = frozenset(
    {TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}
)


class ErrorInfo(msgspec.Struct, frozen=True, array_like=True):
    """An error raised by a task, as stored: the exception's type name, message and traceback."""

    type: str
    message: str
    traceback: str = ""


LEASE_EXPIRED: Final = ErrorInfo(
    "LeaseExpired",
    "the lease lapsed with no attempt left: the worker stopped renewing it (it probably died, "
    "or its event loop was blocked for longer than the lease)",
)
"""The error a backend stores on a task it dead-letters because the lease of its last attempt
lapsed (every backend stores this one, so the message is the same everywhere)."""


class FailurePolicy(str, enum.Enum):
    """What a flow node does when one of its parents ends without a value (failed, cancelled,
    expired): `TaskMessage.after_failure`."""

    FAIL = "fail"
    """End FAILED at once, without running, with an ``UpstreamFailed`` error naming the
    parent and its reason (the default); its own children then follow their policy."""
    SKIP = "skip"
    """End CANCELLED at once, without running, with a ``Skipped`` error naming the parent and
    its reason."""
    RUN = "run"
    """Count the parent as ended and run once every parent has ended (a join that takes
    partial results)."""


UPSTREAM_FAILED: Final = "UpstreamFailed"
"""The error type of a node ended by `FailurePolicy.FAIL`. Its message is
``"<parent> <status>: <type>: <message>"``, where ``<parent>`` is the parent's node name, else
its task name, followed by its id in parentheses (``"load (1m9...) failed: KeyError: 'x'"``)."""
SKIPPED: Final = "Skipped"
"""The error type of a node ended by `FailurePolicy.SKIP` (the message as for
`UPSTREAM_FAILED`)."""
SUPERSEDED: Final = "Superseded"
"""The error type of a task cancelled because the task its outcome goes to
(`TaskMessage.outcome_to`) ended first: a hedge copy that lost, or the join of a cancelled
fan-out. Its message names the task that ended."""


class Progress(msgspec.Struct, frozen=True, array_like=True):
    """Progress reported by a task with `ctx.progress(done, total)`."""

    done: int
    total: int | None = None
    message: str | None = None


class Hedge(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """When a running task gets a second copy on another worker (a hedge against stragglers):
    the ``hedge`` option, ``@app.task(hedge=Hedge(percentile=95))``. See ``docs/hedging.md``.

    The threshold is the `percentile` of the task's recent run times (shared by the workers)
    once at least `min_samples` runs are known; until then (or without a `percentile`) it is
    `after` seconds; without either known, no copy starts. One copy at most per task.

    Args:
        percentile: A run slower than this percentile of recent runs (0 < p < 100) is hedged.
        after: Hedge a run that has taken this many seconds (> 0); with `percentile`, the
            threshold until enough runs are known.
        min_samples: Runs to know before the percentile is trusted (>= 1).

    Raises:
        ValueError: neither `percentile` nor `after` is given, or one is out of range.
    """

    percentile: float | None = None
    after: float | None = None
    min_samples: int = 20

    def __post_init__(self) -> None:
        p, after, n = self.percentile, self.after, self.min_samples
        if p is None and after is None:
            raise ValueError(
                "Hedge needs a threshold: Hedge(percentile=95) (of recent run times), "
                "Hedge(after=30.0) (seconds), or both"
            )
        if p is not None and not (isinstance(p, int | float) and 0 < p < 100):
            raise ValueError(f"Hedge(percentile=...) must be a number in (0, 100), got {p!r}")
        if after is not None and not (isinstance(after, int | float) and after > 0):
            raise ValueError(f"Hedge(after=...) must be seconds > 0, got {after!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"Hedge(min_samples=...) must be an int >= 1, got {n!r}")


class TaskMessage(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One task as it travels through the broker.

    `payload` is the msgpack encoding of ``[args, kwargs]``, kept as opaque bytes so a backend
    never needs to understand it and a worker can turn a payload it cannot decode into a failed
    task instead of a crash. Times are seconds since the epoch from the app's clock.
    """

    id: str
    name: str
    queue: str
    payload: bytes
    priority: int = 0
    eta: float | None = None
    created_at: float = 0.0
    retries: int = 0
    retry_backoff_s: float = 1.0
    timeout_s: float | None = None
    expires_at: float | None = None
    dedup_key: str | None = None
    dedup_ttl_s: float | None = None
    store_result: bool = True
    parent_id: str | None = None
    order_id: str | None = None
    requeued_from: str | None = None
    headers: dict[str, str] = {}
    #: The reader/writer locks the run takes before it starts: (lock name, mode) pairs.
    locks: list[tuple[str, LockMode]] = []
    #: The flow this task is a node of (`Storage.flow_tasks` lists a flow's tasks).
    flow_id: str | None = None
    #: Its name in the flow, unique there (``"load"``, ``"shard[3]"``); for viewers.
    node: str | None = None
    #: The tasks it waits for (its parents): it is stored WAITING, and becomes claimable once
    #: each has ended DONE (`after_failure` says what any other end does to it).
    waits_for: list[str] = []
    #: Its children: (task id, queue) of each task whose `waits_for` holds this one, told
    #: of this task's end by the backend in the call that stores it.
    children: list[tuple[str, str]] = []
    #: What it does when a parent ends without a value.
    after_failure: FailurePolicy = FailurePolicy.FAIL
    #: Parameter -> the parent (or the parents, in order) whose result the worker passes
    #: as that keyword argument when the task runs.
    inputs: dict[str, str | list[str]] = {}
    #: A task (always of the same queue) that ends with this task's outcome when this one
    #: ends, if it has not ended yet: the first outcome wins (a join -> the task that fanned
    #: out; a hedge copy -> the task it copies).
    outcome_to: str | None = None
    #: True for a hedge copy of `outcome_to` (a second run of a straggler): its enqueue emits a
    #: HEDGED event on `outcome_to`, and the events of the race say which copy won.
    copy: bool = False
    #: When the worker running it starts a hedge copy (the ``hedge`` option); None: never.
    hedge: Hedge | None = None


class EnqueueResult(msgspec.Struct, frozen=True, array_like=True):
    """Per message of `Broker.enqueue`: the id that now stands for it, and whether it was new.

    `created` is False when a live task with the same dedup key (or id) already existed; then
    `task_id` is that task's id.
    """

    task_id: str
    created: bool


class Delivery(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A claimed message: run it, then report its `Outcome` with the same `token`.

    `data` is the encoded `TaskMessage` (decoded by the worker, so a corrupt message becomes a
    failed task rather than a crashed claim). `attempt` counts claims that consumed an attempt,
    this one included (the first run is attempt 1). `token` is the fencing token: strictly
    greater than every token handed out before for this task.
    """

    task_id: str
    token: int
    attempt: int
    data: bytes
    lease_expires_at: float


class Lease(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A lease to renew with `Broker.extend`: which task, under which fencing token."""

    task_id: str
    token: int


class LeaseState(str, enum.Enum):
    """What `Broker.extend` says of one lease."""

    OK = "ok"
    """Renewed; keep running."""
    LOST = "lost"
    """Another claim holds the task now (or it is terminal): stop, the outcome will be refused."""
    CANCEL = "cancel"
    """Renewed, but cancellation was requested: stop and report `OutcomeKind.CANCELLED`."""


class OutcomeKind(str, enum.Enum):
    """How an attempt ended, as reported to `Broker.complete`."""

    DONE = "done"
    """Terminal: finished with `result`."""
    FAILED = "failed"
    """Terminal: dead-lettered with `error`."""
    CANCELLED = "cancelled"
    """Terminal: stopped on request."""
    EXPIRED = "expired"
    """Terminal: not started before `expires_at`; never run."""
    RETRY = "retry"
    """Not terminal: run again at `retry_at`; the attempt is spent."""
    RELEASE = "release"
    """Not terminal: give the message back (due at `retry_at`, or now) and refund the attempt.

    Used on graceful shutdown and for a task name no worker knows yet."""
    WAIT = "wait"
    """Not terminal: the run is over and the task becomes WAITING, its lease dropped, until a
    task whose `TaskMessage.outcome_to` is this one ends (the join of a fan-out); this task then
    ends with that outcome. The attempt is spent. Refused, like any outcome, if the task has
    ended already (its join may end before the run that fanned out reports)."""


TERMINAL_OUTCOMES: Final = frozenset(
    {OutcomeKind.DONE, OutcomeKind.FAILED, OutcomeKind.CANCELLED, OutcomeKind.EXPIRED}
)

OUTCOME_STATUS: Final = {
    OutcomeKind.DONE: TaskStatus.DONE,
    OutcomeKind.FAILED: TaskStatus.FAILED,
    OutcomeKind.CANCELLED: TaskStatus.CANCELLED,
    OutcomeKind.EXPIRED: TaskStatus.EXPIRED,
    OutcomeKind.RETRY: TaskStatus.RETRYING,
    OutcomeKind.WAIT: TaskStatus.WAITING,
}


class Outcome(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The end of one attempt, stored and acked atomically by `Broker.complete`.

    `result` is the encoded return value (DONE, and only if the task stores results). `error` is
    set for FAILED and RETRY (the error that caused it) and may be set for CANCELLED and EXPIRED;
    on a RELEASE it may say why the task was given back (its type becomes the ``released``
    event's detail, e.g. ``WaitingForLock``; the record keeps no error). `retry_at` is when a
    RETRY or RELEASE becomes due (None: now). `result_expires_at` is when a terminal result
    stops being readable (the result TTL).
    """

    task_id: str
    token: int
    kind: OutcomeKind
    result: bytes | None = None
    error: ErrorInfo | None = None
    retry_at: float | None = None
    result_expires_at: float | None = None


class CancelResult(str, enum.Enum):
    """What `Broker.cancel` did for one task."""

    CANCELLED = "cancelled"
    """It was queued, scheduled or retrying: it is cancelled now (terminal)."""
    REQUESTED = "requested"
    """It is running: its worker learns it at the next lease renewal and stops."""
    ALREADY_TERMINAL = "already_terminal"
    """It had already ended; nothing changed."""
    NOT_FOUND = "not_found"
    """No such task."""


class TaskRecord(msgspec.Struct, kw_only=True):
    """What the storage knows about one task (returned by `QueueTasks.get`).

    `result` is encoded (use `AsyncResult` for the decoded value); `yields` holds each value a
    generator task yielded, encoded, in order. `result_expired` is True once the result TTL has
    passed: the status stays readable, the result does not. `undecodable` is True when the
    backend could not decode the task's stored message (corrupt data on the server): the fields
    stored beside it (status, attempts, times, result, error, progress) are shown, the others
    (name, priority, created_at, eta, ...) are what could be recovered, else their defaults.
    """

    id: str
    name: str
    queue: str
    status: TaskStatus
    priority: int = 0
    attempts: int = 0
    retries: int = 0
    created_at: float = 0.0
    eta: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: bytes | None = None
    error: ErrorInfo | None = None
    progress: Progress | None = None
    yields: list[bytes] = []
    parent_id: str | None = None
    order_id: str | None = None
    requeued_from: str | None = None
    dedup_key: str | None = None
    store_result: bool = True
    cancel_requested: bool = False
    result_expires_at: float | None = None
    result_expired: bool = False
    token: int = 0
    worker_id: str | None = None
    undecodable: bool = False
    flow_id: str | None = None
    node: str | None = None
    waits_for: list[str] = []
    outcome_to: str | None = None
    copy: bool = False
    #: The task's arguments as sent: the msgpack of ``[args, kwargs]`` (`decode_value`); None
    #: when the stored message could not be read.
    payload: bytes | None = None


class TaskOutcome(msgspec.Struct, kw_only=True, gc=False):
    """The part of a `TaskRecord` that says how a task ended: what `AsyncResult.result` needs,
    cheaper to read than the whole record (see `Storage.wait`)."""

    id: str
    status: TaskStatus
    result: bytes | None = None
    error: ErrorInfo | None = None
    result_expires_at: float | None = None
    result_expired: bool = False

    @classmethod
    def of(cls, record: TaskRecord) -> TaskOutcome:
        """The outcome part of `record`."""
        return cls(
            id=record.id,
            status=record.status,
            result=record.result,
            error=record.error,
            result_expires_at=record.result_expires_at,
            result_expired=record.result_expired,
        )


class ProgressUpdate(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Progress and new yielded values of a running task, fenced by its token."""

    task_id: str
    token: int
    progress: Progress | None = None
    yields: list[bytes] = []


class Checkpoint(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A named value a running task records so that a later run of it can read it back
    (`Storage.save_checkpoints`), fenced by the run's token.

    Unlike progress, which each claim clears, checkpoints outlive the run that wrote them: a
    re-claim after a crash, a retry and a release all keep them, and they go only with the
    task's record. A value is opaque bytes to the backend; saving a name again replaces its
    value. ``ctx.chunks`` keeps one per loop (its position); a named step is one too.
    """

    task_id: str
    token: int
    name: str
    value: bytes


class EventKind(str, enum.Enum):
    """Kinds of entries in the event stream: every state change of a task."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    RELEASED = "released"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    CANCEL_REQUESTED = "cancel_requested"
    PROGRESS = "progress"
    YIELDED = "yielded"
    REQUEUED = "requeued"
    WAITING = "waiting"
    """Stored waiting for its parents, or its run ended waiting for its join (`OutcomeKind.WAIT`;
    the detail is the join's id)."""
    HEDGED = "hedged"
    """A hedge copy of this task was enqueued; the detail is the copy's id."""


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a queue's event stream. `cursor` resumes reading right after it.

    `name` is the task's registered name ("" for events a backend stored before events
    carried it); `flow_id` the flow the task is a node of.
    """

    cursor: str
    task_id: str
    queue: str
    kind: EventKind
    at: float
    attempt: int = 0
    order_id: str | None = None
    detail: str | None = None
    name: str = ""
    flow_id: str | None = None


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counts of one queue's tasks by state (for monitors, ``taskflow stats`` and benchmarks).

    Attributes:
        queue: The queue's name.
        queued: Waiting to run and due now (ready).
        scheduled: Waiting for a time still to come: a delayed task or a retry's backoff.
        running: Claimed by a worker (tasks whose lease lapsed, waiting to be re-delivered,
            included).
        dead: Dead letters (failed for good, not requeued).
        waiting: Waiting for other tasks to end (`TaskStatus.WAITING`: flow nodes whose
            parents are still running, tasks waiting for their join).
        finished_last_minute: Tasks that reached a terminal state (done, failed, cancelled,
            expired) in the minute before ``now``. Redis counts it in whole seconds of the
            callers' clocks, so its window may hold up to one second more.
    """

    queue: str
    queued: int = 0
    scheduled: int = 0
    running: int = 0
    dead: int = 0
    finished_last_minute: int = 0
    waiting: int = 0


class LeaseInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A named coordination lease (leader election, resource locks)."""

    name: str
    owner: str
    token: int
    expires_at: float


class FailedAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """One failed attempt of a task, as the error log keeps it (`QueueTasks.errors`,
    ``taskflow errors``): written by `Broker.complete` in the same step as a RETRY or FAILED
    outcome, so the errors of attempts that were retried and later succeeded stay listed.
    The log is capped (`GlobalConfig.errors_maxlen` entries per queue, oldest dropped)."""

    at: float
    task_id: str
    name: str
    queue: str
    attempt: int
    worker_id: str | None
    error: ErrorInfo
    retried: bool
    """True if this attempt was retried (a RETRY outcome), False if the task failed with it."""

    @property
    def last_frame(self) -> str:
        """The innermost frame of the traceback (``File "...", line N, in f``), or ""."""
        frames = [
            line.strip()
            for line in self.error.traceback.splitlines()
            if line.lstrip().startswith('File "')
        ]
        return frames[-1] if frames else ""


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One live worker as its registry entry says (`QueueTasks.workers`, ``taskflow workers``).

    A worker writes its entry with each heartbeat (`Coordination.register_workers`), which
    sets `heartbeat_at` and `expires_at`; an entry past `expires_at` (its heartbeats stopped)
    is gone for every reader. `roles` names what its app leads (`QueueTasks.leading`: its
    `leadership` blocks holding their role), leader election being the app's business.
    """

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    started_at: float
    roles: tuple[str, ...] = ()
    processed: int = 0
    failed: int = 0
    running: int = 0
    heartbeat_at: float = 0.0
    expires_at: float = 0.0


class LockMode(str, enum.Enum):
    """How a reader/writer lock is held."""

    SHARED = "shared"
    """Many holders at once, none exclusive (exports reading a table)."""
    EXCLUSIVE = "exclusive"
    """One holder and no shared ones (the job that swaps the table)."""


class LockRequest(msgspec.Struct, frozen=True, array_like=True):
    """One request of `Coordination.acquire_locks`: `owner` wants lock `name` in `mode`.

    With `wait`, a request that is not granted joins the lock's queue of waiters (or keeps its
    place there and refreshes it), so that it is granted in its turn by a later release.
    """

    name: str
    owner: str
    mode: LockMode
    wait: bool = True


class LockHold(msgspec.Struct, frozen=True, array_like=True):
    """A granted lock, as renewed and released: who holds it and with which fencing token."""

    name: str
    owner: str
    token: int


class LockHolder(msgspec.Struct, frozen=True, kw_only=True):
    """One holder of a lock, as `Coordination.lock_states` shows it."""

    owner: str
    mode: LockMode
    token: int
    expires_at: float


class LockWaiter(msgspec.Struct, frozen=True, kw_only=True):
    """One queued request of a lock, in its turn, as `Coordination.lock_states` shows it."""

    owner: str
    mode: LockMode
    since: float
    expires_at: float


class LockState(msgspec.Struct, frozen=True, kw_only=True):
    """A lock's live holders and waiters (lapsed entries left out), waiters in queue order."""

    name: str
    holders: list[LockHolder]
    waiters: list[LockWaiter]


class Versioned(msgspec.Struct, frozen=True, array_like=True):
    """A value of the storage's small key-value space, with its version for compare-and-set."""

    value: bytes
    version: int


# --- codecs -------------------------------------------------------------------------------

_message_encoder: Final = msgspec.msgpack.Encoder()
_message_decoder: Final = msgspec.msgpack.Decoder(TaskMessage)
_value_encoder: Final = msgspec.msgpack.Encoder()
_value_decoder: Final = msgspec.msgpack.Decoder()


def encode_message(message: TaskMessage) -> bytes:
    """Encode a message for the broker."""
    return _message_encoder.encode(message)


def decode_message(data: bytes) -> TaskMessage:
    """Decode a message; raises `msgspec.DecodeError` / `msgspec.ValidationError` if corrupt."""
    return _message_decoder.decode(data)


_failed_decoder: Final = msgspec.msgpack.Decoder(FailedAttempt)
_worker_decoder: Final = msgspec.msgpack.Decoder(WorkerInfo)


def encode_failed(entry: FailedAttempt) -> bytes:
    """Encode an error log entry for a backend to keep."""
    return _message_encoder.encode(entry)


def decode_failed(data: bytes) -> FailedAttempt:
    """Decode what `encode_failed` produced."""
    return _failed_decoder.decode(data)


def encode_worker(entry: WorkerInfo) -> bytes:
    """Encode a worker registry entry for a backend to keep."""
    return _message_encoder.encode(entry)


def decode_worker(data: bytes) -> WorkerInfo:
    """Decode what `encode_worker` produced."""
    return _worker_decoder.decode(data)


def encode_value(value: Any) -> bytes:
    """Encode a payload, result or yielded value (msgpack).

    Raises:
        TypeError: `value` holds a type msgspec cannot encode.
        ValueError: `value` cannot be encoded as it is: an integer out of msgpack's range, or
            nesting deeper than msgspec follows (it stops at Python's recursion limit).
    """
    try:
        return _value_encoder.encode(value)
    except RecursionError:
        raise ValueError(_too_deep("encode")) from None


def decode_value(data: bytes) -> Any:
    """Decode what `encode_value` produced.

    Raises:
        msgspec.DecodeError: `data` is not msgpack, or nests deeper than msgspec follows.
    """
    try:
        return _value_decoder.decode(data)
    except RecursionError:
        raise msgspec.DecodeError(_too_deep("decode")) from None


def _too_deep(what: str) -> str:
    # msgspec counts its nesting against the interpreter's recursion limit (RecursionError),
    # which is no error of the caller's code: say what it means for the value instead.
    return (
        f"nested too deeply to {what} (msgspec follows nesting only to about "
        f"{sys.getrecursionlimit()} levels, Python's recursion limit)"
    )
