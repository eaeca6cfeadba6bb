"""`Run`: the state of one claimed delivery, from its claim until its outcome is stored (or its
lease is lost).

A run holds what the worker's loops share about one task: its lease (`task_id`, `token`), the
asyncio task running it while it holds a sub-worker, why it was interrupted, and the progress
and yields not reported yet. It does no I/O: the task's `TaskContext` and the `TaskExecutor`
write into it, and it tells its worker, through the `on_report` callback it was made with, that
it has something to report.

What does not live here: deciding how a run ended (`_outcome.py`), running the function
(`_executor.py`), and the loops that claim, renew, report and store (`_worker.py`,
`_recorder.py`). This module imports no other part of the core but the wire structs, so every
part can see a run without an import circle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, Literal

from ._exceptions import LockLost, UnencodableResult
from ._message import Delivery, Progress, TaskMessage, encode_value

__all__ = ["ASYNC_KINDS", "InterruptReason", "Run"]

InterruptReason = Literal["timeout", "cancel", "lost", "lock", "shutdown"]
"""Why a run was stopped before it ended by itself: its timeout passed, someone cancelled the
task, the worker lost its lease, it lost a lock it declared (`Run.lost_lock`), or the worker is
shutting down."""

ASYNC_KINDS: Final = frozenset({"async", "async_generator"})
"""Task kinds that run on the event loop, so cancelling their asyncio task interrupts them (a
sync function or generator runs in a thread, which cannot be interrupted)."""


class Run:
    """One claimed delivery and what is known about its run so far.

    Args:
        delivery: What the claim returned (the message and its lease).
        on_report: Called with the run when it has progress or yields to report.

    Attributes:
        task: The asyncio task running it while it holds a sub-worker; None before and after.
        kind: The task's kind (`TaskDefinition.kind`) once it started; "" before.
        cancel_requested: Someone asked to cancel the task (`TaskContext.cancel_requested`).
        interrupt_reason: Why it was interrupted (the first reason wins), or None.
        progress: The latest progress the task reported.
        yielded: Every value the task yielded (a generator task's result).
        pending_yields: Encoded yields not reported yet.
        dirty: Progress or yields wait to be reported.
        message: Its decoded message, once the worker decoded it (None before, or if it
            cannot be decoded).
        lost_lock: How it lost a declared lock (its interrupt reason is "lock").
        ending: Its outcome is decided and on its way to the backend: the run is over, and
            what a lease renewal says of it no longer concerns it (a "lost" then is most often
            that outcome stored first).
        chunk_at: The chunk of ``ctx.chunks`` the task is processing (a description, "chunk 3
            of 10 of 'rows' (rows 200..299)"), named in the error of a run that fails in it;
            None outside a chunk loop.
        join_id: The id of the join of the fan-out this run stored (``ctx.fan_out``): the
            run then ends WAIT, its outcome the join's. None if it did not fan out.
    """

    __slots__ = (
        "attempt",
        "cancel_requested",
        "chunk_at",
        "delivery",
        "dirty",
        "ending",
        "interrupt_reason",
        "join_id",
        "kind",
        "lease_until",
        "lost_lock",
        "message",
        "on_report",
        "pending_yields",
        "progress",
        "task",
        "task_id",
        "token",
        "yielded",
    )

    def __init__(self, delivery: Delivery, on_report: Callable[[Run], None]) -> None:
        self.delivery = delivery
        self.on_report = on_report
        self.task_id = delivery.task_id
        self.token = delivery.token
        self.attempt = delivery.attempt
        #: When the lease lapses unless renewed, by this worker's clock (the claim's, then each
        #: renewal's). A run still waiting for a slot past it must not start.
        self.lease_until = delivery.lease_expires_at
        self.task: asyncio.Task[None] | None = None
        self.kind = ""
        self.cancel_requested = False
        self.interrupt_reason: InterruptReason | None = None
        self.progress: Progress | None = None
        self.yielded: list[Any] = []
        self.pending_yields: list[bytes] = []
        self.dirty = False
        self.ending = False
        self.message: TaskMessage | None = None
        self.lost_lock: LockLost | None = None
        self.chunk_at: str | None = None
        self.join_id: str | None = None

    @property
    def started(self) -> bool:
        """True while the run holds a sub-worker (its function is running)."""
        return self.task is not None

    def interrupt(self, reason: InterruptReason) -> None:
        """Stop this run for `reason`; the first reason wins.

        Async code is cancelled at once; a sync function in a thread cannot be interrupted, so
        it is only marked and its sub-worker stays taken until it returns.
        """
        if self.interrupt_reason is not None:
            return
        self.interrupt_reason = reason
        task = self.task
        if task is not None and self.kind in ASYNC_KINDS:
            task.cancel()

    def forget_interrupt_cancel(self) -> None:
        """Undo the ``Task.cancel()`` of `interrupt` when no CancelledError ended the run (the
        task caught it and returned or raised), so the next task on this sub-worker does not
        start with a stale cancellation request that asyncio.timeout / TaskGroup would count.
        Called on the sub-worker's own task."""
        task = asyncio.current_task()
        if self.kind in ASYNC_KINDS and task is not None and task.cancelling():
            task.uncancel()

    def set_progress(self, progress: Progress) -> None:
        """Keep `progress` as the latest, to be reported."""
        self.progress = progress
        self.on_report(self)

    def add_yield(self, value: Any) -> None:
        """Keep a yielded value, to be reported and returned as part of the result.

        Raises:
            UnencodableResult: msgspec cannot encode `value`.
        """
        try:
            encoded = encode_value(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnencodableResult(
                f"the task yielded a {type(value).__name__} that msgspec cannot encode ({exc})"
            ) from None
        self.yielded.append(value)
        self.pending_yields.append(encoded)
        self.on_report(self)
