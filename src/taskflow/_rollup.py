"""The roll-up shared by orders and flows: how many of a set of tasks are in each state, and the
one line that sums them up (``"7 of 12 done, 1 failed: KeyError: 'day'"``).

Orders (`taskflow.supervisor`) count their units, flows (`FlowHandle.status`) their tasks, with
the same `Counts`, the same state names and the same reasons (``"<error type>: <message>"``),
so a viewer shows both the same way. Pure functions and one struct; no I/O.
What does not live here: reading the records (the supervisor's `_status.py`, `_flow_status.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from ._message import ErrorInfo, TaskRecord, TaskStatus

__all__ = ["Counts", "count_state", "failure_reason", "summarize"]


class Counts(msgspec.Struct, kw_only=True):
    """Tasks (an order's units, a flow's tasks) by state.

    Attributes:
        planned: An order's units whose job has not put them in the broker yet.
        waiting: A flow's tasks waiting for their parents (`TaskStatus.WAITING`, never run).
        queued: Queued, scheduled or retrying (waiting for their next attempt).
        running: Running, and a flow's tasks waiting for the join of the fan-out their run
            started (the work they stand for is under way).
        done: Ended with a value.
        failed: Ended failed or expired (a flow's tasks failed by a failed parent included).
        cancelled: Cancelled (a flow's tasks skipped by a failed parent included).
    """

    planned: int = 0
    queued: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    waiting: int = 0

    @property
    def total(self) -> int:
        """All tasks counted."""
        return (
            self.planned
            + self.waiting
            + self.queued
            + self.running
            + self.done
            + self.failed
            + self.cancelled
        )

    def add(self, other: Counts) -> None:
        """Add `other`'s counts into these."""
        for field in self.__struct_fields__:
            setattr(self, field, getattr(self, field) + getattr(other, field))

    def count(self, state: str) -> None:
        """Count one more task in `state` (a field name: ``"done"``, ``"queued"``, ...)."""
        setattr(self, state, getattr(self, state) + 1)


_STATE_OF_STATUS: Final = {
    TaskStatus.QUEUED: "queued",
    TaskStatus.SCHEDULED: "queued",
    TaskStatus.RETRYING: "queued",
    TaskStatus.RUNNING: "running",
    TaskStatus.DONE: "done",
    TaskStatus.FAILED: "failed",
    TaskStatus.EXPIRED: "failed",
    TaskStatus.CANCELLED: "cancelled",
    TaskStatus.WAITING: "waiting",
}


def count_state(record: TaskRecord) -> str:
    """The `Counts` field a task's record counts in. A WAITING task that has run (it fanned
    out and waits for its join) counts as running; one that never ran as waiting."""
    state = _STATE_OF_STATUS[record.status]
    if state == "waiting" and record.attempts > 0:
        return "running"
    return state


def failure_reason(error: ErrorInfo | None) -> str:
    """The reason shown for a failed task: ``"<error type>: <message>"`` (``"failed"`` when the
    task ended without an error)."""
    return "failed" if error is None else f"{error.type}: {error.message}"


_MAX_REASONS: Final = 3


def summarize(total: int, counts: Counts, reasons: Iterable[str]) -> str:
    """``"37 of 84 done, 2 failed: reason; reason"``: up to three distinct `reasons` of the
    failed tasks, in the order given (callers put root causes first), then the cancelled."""
    text = f"{counts.done} of {total} done"
    if counts.failed:
        distinct = list(dict.fromkeys(reasons))[:_MAX_REASONS]
        text += f", {counts.failed} failed" + (": " + "; ".join(distinct) if distinct else "")
    if counts.cancelled:
        text += f", {counts.cancelled} cancelled"
    return text
