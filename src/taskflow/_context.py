"""`TaskContext`: what a running task may know and do about its own run.

A task gets one by declaring a parameter annotated with `TaskContext` (put it first, so the
typed handle's arguments are the rest). The context reports progress and yielded values to the
worker, which batches them to the storage; it never does I/O itself, so it is safe to call from a
sync task running in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ._message import Progress

if TYPE_CHECKING:
    from ._worker import _Run

__all__ = ["TaskContext", "WorkerState"]


class WorkerState(SimpleNamespace):
    """The worker's shared state: `on_startup` hooks put resources here (a pool, a client),
    tasks read them as ``ctx.state.<name>``, `on_shutdown` hooks close them."""


class TaskContext:
    """Handed to a task that declares a parameter annotated with it.

    Attributes:
        task_id: This task's id.
        name: The registered task name.
        queue: The queue it came from.
        attempt: 1 for the first run, 2 for the first retry, ...
        idempotency_key: Stable across attempts (and re-deliveries after a crash): use it to
            make side effects happen once, since at-least-once means a body can run twice.
        state: The worker's shared `WorkerState` (filled by `@app.on_startup` hooks).
        logger: A logger that tags records with the task id.
    """

    __slots__ = (
        "_loop",
        "_loop_thread",
        "_run",
        "attempt",
        "idempotency_key",
        "logger",
        "name",
        "queue",
        "state",
        "task_id",
    )

    def __init__(
        self,
        run: _Run,
        *,
        task_id: str,
        name: str,
        queue: str,
        attempt: int,
        idempotency_key: str,
        state: WorkerState,
    ) -> None:
        self._run = run
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.task_id = task_id
        self.name = name
        self.queue = queue
        self.attempt = attempt
        self.idempotency_key = idempotency_key
        self.state = state
        self.logger = logging.LoggerAdapter(
            logging.getLogger(f"taskflow.task.{name}"), {"task_id": task_id}
        )

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked to cancel this task (a sync task should check it and stop)."""
        return self._run.cancel_requested

    def progress(self, done: int, total: int | None = None, message: str | None = None) -> None:
        """Report progress "done of total"; visible on the result handle and the event stream.

        Cheap and non-blocking: the worker sends the latest value with its next batched report.
        """
        update = Progress(int(done), None if total is None else int(total), message)
        self._call_in_loop(self._run.set_progress, update)

    def _call_in_loop(self, fn: Any, arg: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(arg)
        else:
            self._loop.call_soon_threadsafe(fn, arg)

    def __repr__(self) -> str:
        return f"TaskContext(task_id={self.task_id!r}, name={self.name!r}, attempt={self.attempt})"
