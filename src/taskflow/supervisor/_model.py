"""The orders vocabulary: what a client submits (`Order`, `FailurePolicy`), what is stored
(`OrderRecord`, `JobRecord`, `UnitRecord`, `OrderEvent`), and what is reported back
(`OrderStatus`, `JobStatus`, `Counts`, `UnitFailure`, `OrderReport`).

All of them are `msgspec.Struct`s stored as msgpack in the coordination's durable key-value records;
new fields get defaults, per the project's schema-evolution rule. No I/O lives here.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, Final, Literal

import msgspec

from .._rollup import Counts, summarize
from ._plan import Plan

__all__ = [
    "Counts",
    "FailurePolicy",
    "JobRecord",
    "JobState",
    "JobStatus",
    "Order",
    "OrderEvent",
    "OrderRecord",
    "OrderReport",
    "OrderState",
    "OrderStatus",
    "UnitFailure",
    "UnitRecord",
    "UnitState",
]


class OrderState(str, enum.Enum):
    """Where an order is. The last three are final."""

    PLANNED = "planned"
    """Stored; no job has started yet."""
    RUNNING = "running"
    """At least one job has started."""
    SUCCEEDED = "succeeded"
    """Every unit ended and the failure policy accepts the failures (if any)."""
    FAILED = "failed"
    """Too many units failed for the failure policy (the rest was stopped, if it says so)."""
    CANCELLED = "cancelled"
    """Cancelled by the client."""

    @property
    def final(self) -> bool:
        """True for succeeded, failed and cancelled."""
        return self in (OrderState.SUCCEEDED, OrderState.FAILED, OrderState.CANCELLED)


class JobState(str, enum.Enum):
    """Where one job (a day's share of an order) is."""

    PLANNED = "planned"
    """A plan row: not due yet, nothing in the broker."""
    RUNNING = "running"
    """A TaskManager turned its units into tasks and follows them."""
    DONE = "done"
    """Every unit done."""
    FAILED = "failed"
    """Every unit ended, at least one failed."""
    CANCELLED = "cancelled"
    """Cancelled (the order was, or its failure policy stopped the rest)."""
    DROPPED = "dropped"
    """Removed by an amendment before it started; counts for nothing."""

    @property
    def final(self) -> bool:
        """True once the job will not change again."""
        return self not in (JobState.PLANNED, JobState.RUNNING)


class UnitState(str, enum.Enum):
    """Where one unit (one task of a job) is, as the job record knows it."""

    PLANNED = "planned"
    QUEUED = "queued"
    """Its task exists in the broker (queued, scheduled, running or retrying)."""
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """True for done, failed and cancelled."""
        return self in (UnitState.DONE, UnitState.FAILED, UnitState.CANCELLED)


class FailurePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What failed units do to an order.

    * ``FailurePolicy.keep_going()`` (default): every unit runs; the order succeeds only if
      none failed.
    * ``FailurePolicy.stop()``: the first failed unit stops the rest (cancels queued and
      running tasks and future days); the order fails.
    * ``FailurePolicy.threshold(n)``: up to `n` failed units are tolerated (the order can still
      succeed); the ``n + 1``-th stops the rest and fails the order.
    """

    mode: Literal["continue", "stop", "threshold"] = "continue"
    max_failed: int = 0

    @classmethod
    def keep_going(cls) -> FailurePolicy:
        """Run every unit; succeed only if none failed."""
        return cls(mode="continue")

    @classmethod
    def stop(cls) -> FailurePolicy:
        """Stop the rest at the first failed unit."""
        return cls(mode="stop")

    @classmethod
    def threshold(cls, max_failed: int) -> FailurePolicy:
        """Tolerate up to `max_failed` failed units; stop the rest past that."""
        if max_failed < 0:
            raise ValueError(f"FailurePolicy.threshold needs max_failed >= 0, got {max_failed}")
        return cls(mode="threshold", max_failed=max_failed)

    @property
    def tolerated(self) -> int:
        """How many failed units the order may have and still succeed."""
        return self.max_failed if self.mode == "threshold" else 0

    def stops_at(self, failed: int) -> bool:
        """True if `failed` failed units must stop the rest of the order."""
        return self.mode != "continue" and failed > self.tolerated

    def describe(self) -> str:
        """A short human description, for reports."""
        if self.mode == "continue":
            return "continue on failure"
        if self.mode == "stop":
            return "stop at the first failure"
        return f"tolerate {self.max_failed} failed unit(s)"


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """What a client asks for: run `task` `total` times, on the schedule of `plan`.

    Attributes:
        task: The registered task's name (``buy.name``); registered on the app of every process
            that hosts a Supervisor or a worker for it.
        total: Units in all.
        plan: When they run (`Plan.spread`, `Plan.quotas_per_day`, `Plan.at_once`).
        args: Positional arguments, the same for every unit.
        kwargs: Keyword arguments, the same for every unit.
        per_unit_kwargs: Optional keyword arguments per unit (index -> dict merged over
            `kwargs`); unit indexes count from 0 in plan order.
        unit_kwarg: If set, every unit gets its index as this keyword argument.
        retries: Retries of each unit's task after its first attempt.
        retry_backoff_s: Base backoff of those retries (default: the task's / the config's).
        failure_policy: See `FailurePolicy`.
        queue: The queue of the units' tasks (default: the task's).
        priority: Priority of the units' tasks.
        label: A free-form name for people ("buy article 1234").
        order_id: Choose the id (submitting the same id twice is a no-op); default: random.
    """

    task: str
    total: int
    plan: Plan
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    per_unit_kwargs: dict[int, dict[str, Any]] = {}
    unit_kwarg: str | None = None
    retries: int = 0
    retry_backoff_s: float | None = None
    failure_policy: FailurePolicy = FailurePolicy()
    queue: str | None = None
    priority: int = 0
    label: str = ""
    order_id: str | None = None

    def unit_kwargs(self, index: int) -> dict[str, Any]:
        """The keyword arguments of unit `index`: `kwargs`, its `per_unit_kwargs` over them,
        and its index as `unit_kwarg` if set."""
        kwargs = dict(self.kwargs)
        kwargs.update(self.per_unit_kwargs.get(index, {}))
        if self.unit_kwarg is not None:
            kwargs[self.unit_kwarg] = index
        return kwargs


class UnitRecord(msgspec.Struct, kw_only=True):
    """One unit of a job: when it is planned, its task, and how it ended."""

    index: int
    at: float
    status: UnitState = UnitState.PLANNED
    task_id: str = ""
    attempts: int = 0
    reason: str | None = None
    finished_at: float | None = None


class JobRecord(msgspec.Struct, kw_only=True):
    """One job: a day's share of an order, with its units' planned times (stored once)."""

    order_id: str
    key: str
    day: dt.date
    due_at: float
    units: list[UnitRecord]
    state: JobState = JobState.PLANNED
    started_at: float | None = None
    finished_at: float | None = None
    reason: str | None = None


class OrderRecord(msgspec.Struct, kw_only=True):
    """An order as stored: the request, its state, and what the Supervisor has done with it."""

    id: str
    order: Order
    state: OrderState = OrderState.PLANNED
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    halted: bool = False
    reason: str | None = None
    notified: bool = False
    amendments: int = 0


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of an order's event log. `cursor` resumes `Supervisor.events` after it.

    Kinds: ``submitted``, ``job_started``, ``job_queued`` (its tasks are in the broker),
    ``unit_done``, ``unit_failed``,
    ``unit_cancelled``, ``job_finished``, ``cancel_requested``, ``amended``, ``halted``,
    ``finished`` (the last one: the order is final and its notifier was sent).
    """

    cursor: str
    order_id: str
    kind: str
    at: float
    job: str | None = None
    unit: int | None = None
    detail: str | None = None


class UnitFailure(msgspec.Struct, frozen=True, kw_only=True):
    """A failed unit and why it failed (the task's error type and message)."""

    index: int
    task_id: str
    job: str
    reason: str


class JobStatus(msgspec.Struct, kw_only=True):
    """One job's state and counts."""

    key: str
    day: dt.date
    state: JobState
    counts: Counts
    reasons: list[str] = []


class OrderStatus(msgspec.Struct, kw_only=True):
    """What `Supervisor.status` says of an order."""

    order_id: str
    state: OrderState
    total: int
    counts: Counts
    jobs: list[JobStatus]
    failures: list[UnitFailure]
    reason: str | None = None
    notified: bool = False
    label: str = ""

    @property
    def summary(self) -> str:
        """One line: ``"37 of 84 done, 2 failed: ValueError: out of stock"``."""
        return summarize(self.total, self.counts, [f.reason for f in self.failures])


class OrderReport(msgspec.Struct, kw_only=True):
    """What the notifier task receives (as a dict; `OrderReport.from_payload` types it)."""

    order_id: str
    label: str
    state: OrderState
    succeeded: bool
    total: int
    counts: Counts
    failures: list[UnitFailure]
    reason: str | None
    summary: str
    days: dict[str, str] = {}

    @classmethod
    def from_payload(cls, payload: Any) -> OrderReport:
        """Type the dict a notifier task received back into an `OrderReport`."""
        return msgspec.convert(payload, cls)


_encoder: Final = msgspec.msgpack.Encoder()
_order_decoder: Final = msgspec.msgpack.Decoder(OrderRecord)
_job_decoder: Final = msgspec.msgpack.Decoder(JobRecord)
_event_decoder: Final = msgspec.msgpack.Decoder(OrderEvent)


def encode(value: msgspec.Struct) -> bytes:
    """Encode a record for the key-value store."""
    return _encoder.encode(value)


def decode_order(data: bytes) -> OrderRecord:
    """Decode a stored `OrderRecord`."""
    return _order_decoder.decode(data)


def decode_job(data: bytes) -> JobRecord:
    """Decode a stored `JobRecord`."""
    return _job_decoder.decode(data)


def decode_event(data: bytes) -> OrderEvent:
    """Decode a stored `OrderEvent`."""
    return _event_decoder.decode(data)
