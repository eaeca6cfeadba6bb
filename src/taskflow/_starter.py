"""`Starter`: boots the backend, the startup hooks and the worker of one process, and stops them.

`QueueTasks.running()`, `run_forever()`, `run_in_thread()` and the CLI all go through a Starter,
so there is one start/stop sequence: open the app -> run `on_startup` hooks -> start the worker
and report ready -> ... -> graceful stop -> `on_shutdown` hooks -> close the app (opens nest, so
an app the caller keeps open around the Starter stays open).

`WorkerHooks` holds what ``@app.on_startup``, ``@app.on_shutdown`` and ``@app.worker_service``
registered (the app keeps one, ``app.hooks``) and runs them for the Starter. The Starter sees its
app as a `StarterApp`, so this module never imports the app.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.abc

from ._context import WorkerState
from ._worker import Worker, WorkerApp

__all__ = ["Hook", "Starter", "StarterApp", "WorkerHooks"]

logger = logging.getLogger("taskflow.starter")

A = TypeVar("A")

Hook = Callable[[WorkerState], Awaitable[None]]
"""``async def hook(state)``: an `on_startup` or `on_shutdown` hook."""


class WorkerHooks(Generic[A]):
    """The hooks and services of an app's worker processes, and how they are run.

    `A` is the app type, which services are called with.

    Attributes:
        startup: ``@app.on_startup`` hooks, run in order before the worker claims.
        shutdown: ``@app.on_shutdown`` hooks, run in reverse order after it stopped.
        services: ``@app.worker_service`` coroutines, run beside the worker.
    """

    def __init__(self) -> None:
        self.startup: list[Hook] = []
        self.shutdown: list[Hook] = []
        self.services: list[Callable[[A, WorkerState], Awaitable[None]]] = []

    async def run_startup(self, state: WorkerState) -> None:
        """Run the startup hooks in order; the first that raises stops the rest (and the
        start)."""
        for hook in self.startup:
            await hook(state)

    async def run_shutdown(self, state: WorkerState) -> None:
        """Run the shutdown hooks in reverse order; one that raises is logged, the rest run."""
        for hook in reversed(self.shutdown):
            try:
                await hook(state)
            except Exception:
                logger.exception("on_shutdown hook %r failed", hook)


class StarterApp(WorkerApp, Protocol):
    """What a Starter uses of its app (a `QueueTasks`), beyond what its worker uses."""

    hooks: WorkerHooks[Any]

    async def open(self) -> None:
        """Open the app (counted)."""
        ...

    async def close(self) -> None:
        """Undo one `open`."""
        ...


class Starter:
    """Boots and stops the worker side of one process for an app.

    Attributes:
        worker: The running `Worker` (None before `serve` reports ready).
        state: The `WorkerState` the startup hooks filled.
    """

    def __init__(
        self,
        app: StarterApp,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
    ) -> None:
        self.app = app
        self.concurrency = concurrency
        self.queues = queues
        self.state = WorkerState()
        self.worker: Worker | None = None
        self._stop_requested = False
        self._worker_done = anyio.Event()

    async def _run_worker(
        self,
        worker: Worker,
        *,
        task_status: anyio.abc.TaskStatus[Worker] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await worker.run(task_status=task_status)
        finally:
            self._worker_done.set()

    async def _run_service(self, service: Callable[[Any, WorkerState], Awaitable[None]]) -> None:
        try:
            await service(self.app, self.state)
        except Exception:
            logger.exception("worker service %r failed; the worker keeps running", service)

    def stop(self) -> None:
        """Ask the worker to stop gracefully (safe to call before it started or twice)."""
        self._stop_requested = True
        if self.worker is not None:
            self.worker.stop()

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[Starter] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Open, start, report ready, and run until stopped; cleans up on any exit."""
        app = self.app
        await app.open()
        try:
            try:
                # Inside the try: if a later startup hook fails, the shutdown hooks still close
                # what the earlier ones opened (hooks must tolerate a missing resource).
                await app.hooks.run_startup(self.state)
                worker = Worker(
                    app, concurrency=self.concurrency, queues=self.queues, state=self.state
                )
                self.worker = worker
                async with anyio.create_task_group() as tg:
                    await tg.start(self._run_worker, worker)
                    async with anyio.create_task_group() as services:
                        for service in app.hooks.services:
                            services.start_soon(self._run_service, service)
                        if self._stop_requested:
                            worker.stop()
                        task_status.started(self)
                        await self._worker_done.wait()
                        services.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await app.hooks.run_shutdown(self.state)
        finally:
            with anyio.CancelScope(shield=True):
                await app.close()
