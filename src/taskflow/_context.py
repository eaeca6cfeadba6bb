"""`TaskContext`: what a running task may know and do about its own run.

A task gets one by declaring a parameter annotated with `TaskContext` (put it first, so the
typed handle's arguments are the rest). The context reports progress and yielded values to the
worker, which batches them to the storage; it never does I/O itself, so it is safe to call from a
sync task running in a thread. The exceptions are `TaskContext.chunks` and `TaskContext.step`
(``_steps.py``), which write checkpoints (awaited; from a sync task's thread through the event
loop), and `TaskContext.fan_out`, which stores shards and a join (`_fan_out.py`). It also shows the
headers the task was sent with (`headers`), less the one taskflow reserves for the idempotency
key, and carries the task's side of its artifacts (`TaskArtifacts`, from `_artifacts.py`), which
does I/O on the worker's loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType, SimpleNamespace
from typing import Any, Final, ParamSpec, Protocol, TypeVar, overload

from ._artifacts import TaskArtifacts
from ._checkpoints import RunCheckpoints
from ._chunks import ChunkCount, Chunks
from ._exceptions import LifecycleError
from ._message import Progress
from ._run import Run
from ._steps import Step, call_step, check_step_function


class FanOutStarter(Protocol):
    """What ``ctx.fan_out`` calls: the run's `FanOut` (`_fan_out.py`, which imports this
    module's neighbours, so it is seen through this protocol)."""

    async def start(
        self,
        shard_task: Any,
        shards: Iterable[Any],
        *,
        join: Any,
        partial: bool,
        kwargs: Mapping[str, Any] | None,
    ) -> str:
        """Store the shards and the join; the join's id."""
        ...


T = TypeVar("T")
P = ParamSpec("P")

__all__ = ["IDEMPOTENCY_HEADER", "FanOutStarter", "TaskContext", "WorkerState"]

IDEMPOTENCY_HEADER: Final = "idempotency_key"
"""The header that carries `TaskContext.idempotency_key` (set by ``options(idempotency_key=...)``);
kept out of `TaskContext.headers`, so forwarding a task's headers to the tasks it sends never
hands them its idempotency key."""


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
        headers: The headers the task was sent with (``options(headers=...)``), read-only,
            for example a trace context to continue. The ``idempotency_key`` header is not
            among them: it is `idempotency_key`.
        state: The worker's shared `WorkerState` (filled by `@app.on_startup` hooks).
        logger: A logger that tags records with the task id.
    """

    __slots__ = (
        "_artifacts",
        "_checkpoints",
        "_fan_out",
        "_loop",
        "_loop_thread",
        "_run",
        "attempt",
        "headers",
        "idempotency_key",
        "logger",
        "name",
        "queue",
        "state",
        "task_id",
    )

    def __init__(
        self,
        run: Run,
        *,
        task_id: str,
        name: str,
        queue: str,
        attempt: int,
        headers: Mapping[str, str],
        state: WorkerState,
        checkpoints: RunCheckpoints,
        artifacts: TaskArtifacts | None = None,
        fan_out: FanOutStarter | None = None,
    ) -> None:
        self._run = run
        self._fan_out = fan_out
        self._checkpoints = checkpoints
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.task_id = task_id
        self.name = name
        self.queue = queue
        self.attempt = attempt
        visible = dict(headers)
        self.idempotency_key = visible.pop(IDEMPOTENCY_HEADER, task_id)
        self.headers: Mapping[str, str] = MappingProxyType(visible)
        self.state = state
        self._artifacts = artifacts
        self.logger = logging.LoggerAdapter(
            logging.getLogger(f"taskflow.task.{name}"), {"task_id": task_id}
        )

    @property
    def artifacts(self) -> TaskArtifacts:
        """The files this task produces (`TaskArtifacts`): ``await ctx.artifacts.put(name,
        data)`` in an async task, ``ctx.artifacts.put_sync(name, data)`` in a sync one.

        Raises:
            LifecycleError: this context was not made by a worker (it has no app to keep
                artifacts in).
        """
        if self._artifacts is None:
            raise LifecycleError(
                "this TaskContext was made outside a worker, so it has no artifacts: run the "
                "task through a worker (`async with app.running():`)"
            )
        return self._artifacts

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

    @overload
    def chunks(  # type: ignore[overload-overlap]  # a range is an iterable of ints too
        self,
        source: range | tuple[int, int],
        *,
        size: int,
        name: str = "chunks",
        total: int | None = None,
        message: str | None = None,
        count: ChunkCount = "rows",
        resume: bool = True,
    ) -> Chunks[range]: ...

    @overload
    def chunks(
        self,
        source: Iterable[T] | AsyncIterable[T],
        *,
        size: int,
        name: str = "chunks",
        total: int | None = None,
        message: str | None = None,
        count: ChunkCount = "rows",
        resume: bool = True,
    ) -> Chunks[list[T]]: ...

    def chunks(
        self,
        source: Any,
        *,
        size: int,
        name: str = "chunks",
        total: int | None = None,
        message: str | None = None,
        count: ChunkCount = "rows",
        resume: bool = True,
    ) -> Chunks[Any]:
        """Walk `source` in chunks of `size`, resuming after the chunks an earlier run of this
        task recorded done; ``async for chunk in ctx.chunks(...)`` (``for`` in a sync task).

        A chunk is recorded done (a checkpoint, awaited) when the loop asks for the next one or
        ends, and progress is then reported: rows done of the total (or chunks, `count`), with
        `message` formatted with ``{done}`` and ``{total}`` ("loaded {done} of {total}").

        Args:
            source: A `range` or a ``(start, stop)`` pair of ints (chunks are sub-ranges), a
                sequence, any iterable that can be iterated again from its start, or an async
                iterable (chunks are lists of its items).
            size: Rows (items) per chunk, >= 1.
            name: The loop's name: two loops in one task that should resume separately need
                names of their own.
            total: Rows in all, for progress, where `len(source)` does not say.
            message: The progress message, formatted with ``{done}`` and ``{total}``.
            count: Count progress in "rows" (default) or "chunks".
            resume: False walks the source from the start on every run and records nothing
                (the only way to walk a one-shot iterator).

        Raises:
            NotResumable: `source` is a one-shot iterator and `resume` is True.
            ValueError: `size` is not an int >= 1; `name` is used by another loop of this run.
            TypeError: `source` is not something to iterate.
            LeaseLost: (while iterating) the backend refused the position: another run holds
                the task now; let it propagate.
        """
        return Chunks(
            source,
            size=size,
            name=name,
            total=total,
            message=message,
            count=count,
            resume=resume,
            checkpoints=self._checkpoints,
            run=self._run,
            report=self.progress,
            loop_thread=self._loop_thread,
        )

    async def fan_out(
        self,
        shard_task: Any,
        shards: Iterable[Any],
        *,
        join: Any = None,
        partial: bool = False,
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        """Split this task's work into shards and a join, stored in one backend call.
        ``return await ctx.fan_out(count_rows, parts, join=merge)``.

        Each item of `shards` is one shard: ``shard_task(item, **kwargs)``. The join gets the
        shards' results, in shard order, as its first parameter once every shard has ended
        (``join(results)``; the default join returns the list). When this run returns, the
        task waits for its join and ends as the join ends: its result is the join's (what the
        function returned is ignored), and in a flow its children start then. Once per run; a
        run repeated after a crash stores nothing new (the ids are derived from this task's).

        It returns the join's id (a `str`), typed `Any` so that ``return await
        ctx.fan_out(...)`` type-checks against the task's declared result, the join's: write
        ``async def split(ctx: TaskContext, day: str) -> int`` when the join returns an int,
        and ``split.add_task(...)`` gives an ``AsyncResult[int]`` (under mypy's
        ``warn_return_any``: ``return cast(int, await ctx.fan_out(...))``).

        Args:
            shard_task: The task each shard runs (a `TaskFunc`, or a registered name).
            shards: One argument per shard.
            join: The task (a `TaskFunc`, or a registered name) that gets the list of
                results (default: the built-in one, which returns it). It runs on this
                task's queue.
            partial: False (default): a shard that fails for good fails the join, with the
                shard's reason. True: the join runs once every shard has ended, getting a
                `NodeFailed` for each shard that failed (the built-in join: None).
            kwargs: Keyword arguments given to every shard.

        Raises:
            InvalidFlow: this run fanned out already, or the join takes no parameter.
            UnknownTaskError: a task named by a string is not registered.
            InvalidArguments: a shard's arguments do not bind to `shard_task`.
            EncodeError: a shard's argument cannot be encoded.
            LifecycleError: this context was not made by a worker.
        """
        if self._fan_out is None:
            raise LifecycleError(
                "this TaskContext was made outside a worker, so it cannot fan out: run the "
                "task through a worker (`async with app.running():`)"
            )
        return await self._fan_out.start(
            shard_task, shards, join=join, partial=partial, kwargs=kwargs
        )

    def fan_out_sync(
        self,
        shard_task: Any,
        shards: Iterable[Any],
        *,
        join: Any = None,
        partial: bool = False,
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        """`fan_out` from a sync task (it runs in a thread; the call runs on the worker's
        loop and blocks until the shards are stored).

        Raises:
            LifecycleError: called on the worker's loop (there, ``await ctx.fan_out(...)``).
            InvalidFlow, UnknownTaskError, InvalidArguments, EncodeError: as `fan_out`.
        """
        if threading.get_ident() == self._loop_thread:
            raise LifecycleError(
                "ctx.fan_out_sync blocks, and this is the worker's event loop: in an async "
                "task, await ctx.fan_out(...)"
            )
        coroutine = self.fan_out(shard_task, shards, join=join, partial=partial, kwargs=kwargs)
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @overload
    def step(self, name: str, /) -> Step: ...

    @overload
    def step(
        self,
        name: str,
        fn: Callable[P, Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Awaitable[T]: ...

    @overload
    def step(
        self, name: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> Awaitable[T]: ...

    def step(self, name: str, fn: Any = None, /, *args: Any, **kwargs: Any) -> Any:
        """A named step of this run, skipped by a re-run once recorded done (`Step`).

        ``value = await ctx.step("download", fn, *args, **kwargs)`` calls `fn` (sync or async)
        unless an earlier run of this task recorded the step done, records its return value
        and returns the recorded value. ``async with ctx.step("download") as step:`` (``with``
        in a sync task) makes a block a step: the block runs every time and guards its work
        with ``if not step.done:``, setting ``step.value``. A step is recorded done (a
        checkpoint, awaited, fenced by the run's token) only when it ends normally; a step that
        raised, or whose run died, runs again on the next run. See ``docs/steps.md``.

        Args:
            name: The step's name, unique in the task (a loop of steps names each one,
                ``f"load:{day}"``).
            fn: For the callable form, the function to call (its result is the step's value).
            *args: Positional arguments for `fn`.
            **kwargs: Keyword arguments for `fn`.

        Raises:
            ValueError: `name` is empty or used by another step of this run.
            TypeError: `fn` is not callable, or the callable form is used in a sync task.
            UnencodableResult: (when the step ends) its value cannot be encoded.
            LeaseLost: (when the step ends) the backend refused its record: another run holds
                the task now; let it propagate.
        """
        step = Step(
            name, checkpoints=self._checkpoints, run=self._run, loop_thread=self._loop_thread
        )
        if fn is None:
            return step
        check_step_function(name, fn, threading.get_ident() == self._loop_thread)
        return call_step(step, fn, args, kwargs)

    def _call_in_loop(self, fn: Any, arg: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(arg)
        else:
            self._loop.call_soon_threadsafe(fn, arg)

    def __repr__(self) -> str:
        return f"TaskContext(task_id={self.task_id!r}, name={self.name!r}, attempt={self.attempt})"
