"""`QueueTasks`: the app. Registry of tasks, config, backend, lifecycle, and the send path.

What lives here: the `@app.task` decorator, building `TaskMessage`s from calls (`_enqueue_one`,
`add_tasks`), the app's open/close entry points, the three ways to run workers (`running`,
`run_forever`, `run_in_thread`, all through `Starter`). Which event loop owns the app, opening
at first use, reopening, and the bridge from synchronous code live in `_lifecycle.py`; running
tasks lives in `_worker.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime
from types import TracebackType
from typing import Any, Concatenate, Final, ParamSpec, Self, TypeVar, overload

import anyio
import anyio.from_thread
import msgspec
from typing_extensions import Unpack

from ._backends import check_app_name, resolve_backend
from ._client import AsyncResult, SyncResult
from ._clock import Clock, SystemClock
from ._config import GlobalConfig, app_config
from ._context import TaskContext, WorkerState
from ._exceptions import (
    EncodeError,
    InvalidArguments,
    TaskRegistrationError,
    UnknownTaskError,
)
from ._lifecycle import AppLifecycle, loop_options
from ._message import CancelResult, TaskMessage, TaskRecord, encode_value
from ._starter import Starter
from ._task import (
    NO_OPTIONS,
    CallOptions,
    PreparedTask,
    TaskDefaults,
    TaskDefinition,
    TaskFunc,
    TaskOptions,
    given,
    make_definition,
)
from .abc import Broker, Coordination, Storage

__all__ = ["QueueTasks"]

_NO_HEADERS: dict[str, str] = {}
# Distinct from NO_OPTIONS (same values) so building a template takes the general path.
_TEMPLATE_OPTIONS = TaskOptions(task_id="template")

logger = logging.getLogger("taskflow.app")

_running_loop = asyncio.get_running_loop

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")

ExceptionTypes = Sequence[type[BaseException]] | type[BaseException]
Hook = Callable[[WorkerState], Awaitable[None]]
Service = Callable[["QueueTasks", WorkerState], Awaitable[None]]


class _TaskDecorator:
    """What ``@app.task(name=..., ...)`` returns: applies the options to a function."""

    def __init__(
        self,
        app: QueueTasks,
        name: str | None,
        retry_on: ExceptionTypes | None,
        dont_retry_on: ExceptionTypes | None,
        defaults: TaskDefaults,
    ) -> None:
        self._app = app
        self._name = name
        self._retry_on = retry_on
        self._dont_retry_on = dont_retry_on
        self._defaults = defaults

    @overload
    def __call__(
        self, fn: Callable[Concatenate[TaskContext, P], AsyncIterator[Y]]
    ) -> TaskFunc[P, list[Y]]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[TaskContext, P], Coroutine[Any, Any, R]]
    ) -> TaskFunc[P, R]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[TaskContext, P], Iterator[Y]]
    ) -> TaskFunc[P, list[Y]]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[TaskContext, P], R]) -> TaskFunc[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, AsyncIterator[Y]]) -> TaskFunc[P, list[Y]]: ...
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> TaskFunc[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, Iterator[Y]]) -> TaskFunc[P, list[Y]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> TaskFunc[P, R]: ...
    def __call__(self, fn: Callable[..., Any]) -> TaskFunc[Any, Any]:
        return self._app._register(
            fn, self._name, self._retry_on, self._dont_retry_on, self._defaults
        )


class QueueTasks:
    """The app: register tasks, send them, run workers.

    ```python
    app = QueueTasks(name="shop")                       # in-memory, no server
    app = QueueTasks(name="shop", broker="redis://localhost:6379/0")

    @app.task(retries=3)
    async def add(a: int, b: int) -> int:
        return a + b

    async with app.running(concurrency=10):
        handle = await add.add_task(2, 3)
        assert await handle.result(timeout=5) == 5
    ```

    An app is meant to be a module-level object. It connects to its backend at the first call
    that needs it, on the running event loop (``async with app:`` does so explicitly, and is
    how a service fails fast at start-up), closes with the event loop that owns it, and opens
    again on the next one; from plain synchronous code, ``add.add_task_sync(2, 3)`` works too.

    Args:
        name: The app's name: its namespace on a server (apps with different names on one
            Redis or PostgreSQL never see each other's tasks; the producers and workers of one
            app use the same name), and its name in logs. 1 to 40 letters, digits, ``_`` or
            ``-``, starting with a letter or digit.
        broker: A `Broker`, or a URL (``memory://``, ``redis://``, ``redis+cluster://``,
            ``postgresql://``), built in the app's namespace. A `Broker` object keeps its own
            (``from_url(url, app=name)`` builds one in it). Default: the in-memory backend.
        storage: Optional; the broker's storage is used. Given, it must be the same backend.
        config: Settings; default ``GlobalConfig()`` (environment variables apply).
        clock: The time seam; `taskflow.testing.FakeClock` in tests.

    Raises:
        ConfigError: a name that cannot name an app, an unknown URL scheme, broker and storage
            on different backends, a broker or storage that is neither a URL nor a backend
            object, or a config that is not a `GlobalConfig`.
        BackendUnavailable: the URL's driver is not installed (the message says what to install).
    """

    def __init__(
        self,
        name: str = "taskflow",
        *,
        broker: Broker | str | None = None,
        storage: Storage | str | None = None,
        config: GlobalConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        check_app_name(name)
        self.name = name
        self.config = app_config(config)
        self.clock: Clock = clock if clock is not None else SystemClock()
        #: The backend's `Broker` (moving messages); it carries the two below.
        self.broker: Broker = resolve_backend(broker, storage, app=name)
        #: The backend's `Storage` (task records, results, events): ``broker.storage``.
        self.storage: Storage = self.broker.storage
        #: The backend's `Coordination` (leases, key-value records): ``broker.coordination``.
        self.coordination: Coordination = self.broker.coordination
        self._tasks: dict[str, TaskDefinition] = {}
        self._owns_broker = True
        self._templates: dict[str, TaskMessage] = {}
        self._services: list[Service] = []
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._life = AppLifecycle(self)

    # -- registration ----------------------------------------------------------------------

    @overload
    def task(
        self, fn: Callable[Concatenate[TaskContext, P], AsyncIterator[Y]]
    ) -> TaskFunc[P, list[Y]]: ...
    @overload
    def task(
        self, fn: Callable[Concatenate[TaskContext, P], Coroutine[Any, Any, R]]
    ) -> TaskFunc[P, R]: ...
    @overload
    def task(
        self, fn: Callable[Concatenate[TaskContext, P], Iterator[Y]]
    ) -> TaskFunc[P, list[Y]]: ...
    @overload
    def task(self, fn: Callable[Concatenate[TaskContext, P], R]) -> TaskFunc[P, R]: ...
    @overload
    def task(self, fn: Callable[P, AsyncIterator[Y]]) -> TaskFunc[P, list[Y]]: ...
    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> TaskFunc[P, R]: ...
    @overload
    def task(self, fn: Callable[P, Iterator[Y]]) -> TaskFunc[P, list[Y]]: ...
    @overload
    def task(self, fn: Callable[P, R]) -> TaskFunc[P, R]: ...
    @overload
    def task(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        retry_on: ExceptionTypes | None = None,
        dont_retry_on: ExceptionTypes | None = None,
        **defaults: Unpack[TaskDefaults],
    ) -> _TaskDecorator: ...
    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        retry_on: ExceptionTypes | None = None,
        dont_retry_on: ExceptionTypes | None = None,
        **defaults: Unpack[TaskDefaults],
    ) -> TaskFunc[Any, Any] | _TaskDecorator:
        """Register a function as a task: ``@app.task`` or ``@app.task(retries=3, ...)``.

        Works on async functions, plain functions (run in a bounded thread pool, never on the
        event loop), and generator / async-generator functions (each yielded value is recorded
        while the task runs; the result is the list of yields). A parameter annotated with
        `TaskContext` (put it first) receives the run's context.

        Args:
            name: Registered name (default: the function's ``__qualname__``).
            retry_on: Retry only these exception types.
            dont_retry_on: Never retry these exception types.
            **defaults: The task's default options (`TaskDefaults`: `queue`, `priority`,
                `retries`, `retry_backoff`, `timeout`, `expires`, `store_result`); each call
                can override them with `TaskFunc.options`. Checked by the same rules as per
                call.

        Raises:
            TaskRegistrationError: not a function, or a name already taken.
            InvalidOption: an unknown option, or a value that breaks its option's rule.
        """
        if fn is None:
            return _TaskDecorator(self, name, retry_on, dont_retry_on, defaults)
        return self._register(fn, name, retry_on, dont_retry_on, defaults)

    def _register(
        self,
        fn: Callable[..., Any],
        name: str | None,
        retry_on: ExceptionTypes | None,
        dont_retry_on: ExceptionTypes | None,
        defaults: TaskDefaults,
    ) -> TaskFunc[Any, Any]:
        definition = make_definition(
            fn, name=name, retry_on=retry_on, dont_retry_on=dont_retry_on, defaults=defaults
        )
        if definition.name in self._tasks and self._tasks[definition.name].fn is not fn:
            raise TaskRegistrationError(
                f"a task named {definition.name!r} is already registered on app {self.name!r}; "
                "give one of them another name with @app.task(name=...)"
            )
        self._tasks[definition.name] = definition
        return TaskFunc(self, definition)

    @property
    def tasks(self) -> Mapping[str, TaskDefinition]:
        """Registered tasks by name (read-only view)."""
        return dict(self._tasks)

    def on_startup(self, fn: Hook) -> Hook:
        """Register ``async def hook(state: WorkerState)``, run when a worker process starts
        (before it claims), to create shared resources tasks reach as ``ctx.state``."""
        self._startup.append(fn)
        return fn

    def on_shutdown(self, fn: Hook) -> Hook:
        """Register ``async def hook(state: WorkerState)``, run when a worker stops (in reverse
        order of registration), to close what `on_startup` opened."""
        self._shutdown.append(fn)
        return fn

    def worker_service(self, fn: Service) -> Service:
        """Register ``async def service(app, state)`` to run beside the worker in every worker
        process, from after the startup hooks until the worker stops (then it is cancelled).

        Long-running coordinators use it (the orders Supervisor is one: every worker process
        hosts a candidate, and leader election picks the one that acts)."""
        self._services.append(fn)
        return fn

    async def _run_startup(self, state: WorkerState) -> None:
        for hook in self._startup:
            await hook(state)

    async def _run_shutdown(self, state: WorkerState) -> None:
        for hook in reversed(self._shutdown):
            try:
                await hook(state)
            except Exception:
                logger.exception("on_shutdown hook %r failed", hook)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True while the app is open (connected to its backend) on a live event loop."""
        return self._life.is_open

    async def open(self) -> None:
        """Connect the backend on the running event loop. ``async with app:`` does this for you.

        Optional: any call that needs the backend opens the app by itself. Opening explicitly
        is how a service fails fast at start-up (a server that is down raises here). Opens
        nest: the backend closes at the outermost `close()`. A closed app opens again.

        Raises:
            BackendUnavailable: the server cannot be reached.
            LifecycleError: the app is open on an event loop still running in another thread.
        """
        await self._life.open()

    async def close(self) -> None:
        """Undo one `open()`; the outermost one disconnects the backend (so does closing an app
        opened by a call). Closing an app that is not open does nothing; it opens again when
        next used. An app also closes by itself when the event loop it is open on ends."""
        await self._life.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _ensure_open(self) -> None:
        """Open the app on the running loop if it is not open there (a lazy open)."""
        if self._life.loop is not asyncio.get_running_loop():
            await self._life.ensure_open()

    def _is_open_here(self) -> bool:
        """True if the app is open on the running loop: the hot paths check this before
        awaiting `_ensure_open`, which saves them a coroutine."""
        return self._life.loop is asyncio.get_running_loop()

    async def _connect(self) -> None:
        """Open the backend (for `AppLifecycle`, on the loop that will own the app)."""
        self.broker.result_ttl_s = self.config.result_ttl_s
        self.storage.events_maxlen = self.config.events_maxlen
        # A broker opened by its creator (tests, shared connections) stays theirs to close.
        self._owns_broker = not self.broker.is_open
        if self._owns_broker:
            await self.broker.open()

    async def _disconnect(self) -> None:
        if self._owns_broker:
            await self.broker.close()

    def _abandon(self) -> None:
        """Let go of the backend of an event loop that has ended (nothing can be awaited)."""
        if self._owns_broker:
            self.broker.abandon()

    # -- running workers -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(
        self, concurrency: int | None = None, *, queues: Sequence[str] | None = None
    ) -> AsyncIterator[Starter]:
        """Run a worker inside the caller's event loop for the duration of the block.

        Opens the app for the block and closes it after (an app kept open around the block
        stays open: opens nest). Returns once the worker is ready; installs no signal handlers.
        Leaving the block stops the worker gracefully; cancellation propagates (running tasks
        are released for redelivery).
        """
        starter = Starter(self, concurrency=concurrency, queues=queues)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(starter.serve)
                try:
                    yield starter
                finally:
                    starter.stop()
        except BaseExceptionGroup as group:
            # The caller's own exception should reach the caller as itself, not wrapped.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    def run_forever(
        self, concurrency: int | None = None, *, queues: Sequence[str] | None = None
    ) -> None:
        """Run a worker in this thread until SIGINT/SIGTERM, then shut down gracefully.

        For scripts: it starts its own event loop (uvloop when installed). One stop request
        means one graceful stop, however many copies of the signal arrive within a second (a
        terminal signals the whole process group, and ``taskflow worker -p N`` forwards it
        too); a second signal a second or more later stops at once (running tasks are
        released for redelivery).

        Raises:
            Exception: what stopped the worker from starting or running (an `on_startup`
                hook's error, `BackendUnavailable`), as itself, not in an exception group.
        """
        starter = Starter(self, concurrency=concurrency, queues=queues)
        anyio.run(self._serve_until_signal, starter, backend_options=loop_options())

    async def _serve_until_signal(self, starter: Starter) -> None:
        try:
            async with anyio.create_task_group() as tg:
                # The signal watcher outlives a stop-now: its receiver keeps the default
                # handlers away (a late copy of a signal would kill the process) until the
                # worker has released what it held and the app is closed.
                serving = anyio.CancelScope()
                tg.start_soon(_watch_signals, lambda _: starter.stop(), lambda _: serving.cancel())
                with serving:
                    await starter.serve()
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # As in running(): the error itself, not wrapped in (nested) one-error groups.
            error: BaseException = group
            while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
                error = error.exceptions[0]
            if error is group:
                raise
            raise error from None

    @contextlib.contextmanager
    def run_in_thread(
        self, concurrency: int | None = None, *, queues: Sequence[str] | None = None
    ) -> Iterator[Starter]:
        """Run a worker on an event loop in a background thread, for synchronous programs.

        Inside the block, the blocking calls (`add_task_sync`, `SyncTask`, `SyncResult`) run on
        that loop, which owns the app (it takes the app over from the private loop of earlier
        blocking calls).

        Raises:
            LifecycleError: the app is open on an event loop running in another thread.
        """
        starter = Starter(self, concurrency=concurrency, queues=queues)
        with anyio.from_thread.start_blocking_portal(backend_options=loop_options()) as portal:
            future, _ = portal.start_task(starter.serve)
            try:
                yield starter
            finally:
                portal.call(starter.stop)
                future.result()

    # -- the sync bridge -------------------------------------------------------------------

    def _call_sync(self, fn: Callable[..., Awaitable[R]], *args: Any) -> R:
        """Run ``await fn(*args)`` with the app open, from synchronous code (see
        `AppLifecycle.call_sync`)."""
        return self._life.call_sync(fn, *args)

    def _send_sync(
        self,
        definition: TaskDefinition,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: TaskOptions,
    ) -> SyncResult[Any]:
        """`_enqueue_one` from synchronous code (`add_task_sync`)."""
        handle = self._call_sync(self._enqueue_one, definition, args, kwargs, options)
        return SyncResult(handle.task_id, self)

    def close_sync(self) -> None:
        """`close` for synchronous code: close the app on whichever event loop it is open on
        (the private one its blocking calls started when no loop owned it, for example).

        Raises:
            LifecycleError: called on a thread that runs an event loop (use ``await
                app.close()``).
        """
        self._life.close_sync()

    # -- sending ---------------------------------------------------------------------------

    async def add_task(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[CallOptions],
    ) -> AsyncResult[Any]:
        """Send a task by name: ``await app.add_task("add", args=(2, 3), priority=5)``.

        Returns an `AsyncResult`. The options are those of `TaskFunc.options` (`CallOptions`).

        Raises:
            UnknownTaskError: no task of that name is registered on this app.
            InvalidArguments: `args` / `kwargs` do not fit the task's signature.
            InvalidOption: an unknown option, or a value that breaks its option's rule.
            EncodeError: an argument cannot be encoded.
        """
        return await self._enqueue_by_name(
            task_name, args, kwargs, TaskOptions.of(options, task=task_name)
        )

    async def add_tasks(
        self, calls: Sequence[PreparedTask[Any]], *, connection: Any = None
    ) -> list[AsyncResult[Any]]:
        """Send many tasks in one backend call: ``await app.add_tasks([add.prepare(1, 2), ...])``.

        Returns one `AsyncResult` per call, in order.

        Raises:
            InvalidArguments: `calls` holds something other than prepared calls (what
                ``task.prepare(...)`` returns).
        """
        prepared = _prepared_calls(calls)
        await self._ensure_open()
        now = self.clock.time()
        messages = [
            self._build_message(call.definition, call.args, call.kwargs, call.options, now)
            for call in prepared
        ]
        results = await self.broker.enqueue(messages, now=now, connection=connection)
        return [AsyncResult(r.task_id, self) for r in results]

    async def _enqueue_by_name(
        self,
        task_name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        options: TaskOptions,
    ) -> AsyncResult[Any]:
        definition = self._tasks.get(task_name)
        if definition is None:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise UnknownTaskError(
                f"no task named {task_name!r} is registered on app {self.name!r} "
                f"(registered: {known})"
            )
        return await self._enqueue_one(definition, tuple(args), dict(kwargs or {}), options)

    async def _enqueue_one(
        self,
        definition: TaskDefinition,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: TaskOptions,
    ) -> AsyncResult[Any]:
        definition.check_arguments(args, kwargs)
        if self._life.loop is not _running_loop():  # the hot path's check, inlined
            await self._life.ensure_open()
        now = self.clock.time()
        message = self._build_message(definition, args, kwargs, options, now)
        result = (await self.broker.enqueue((message,), now=now, connection=options.connection))[0]
        return AsyncResult(result.task_id, self)

    def _build_message(
        self,
        definition: TaskDefinition,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: TaskOptions,
        now: float,
    ) -> TaskMessage:
        if options is NO_OPTIONS:
            return self._build_default_message(definition, args, kwargs, now)
        config = self.config
        payload = _encode_payload(definition, args, kwargs)
        queue = given(options.queue, definition.queue) or config.default_queue
        retries = given(options.retries, definition.retries)
        backoff = given(options.retry_backoff, definition.retry_backoff_s)
        return TaskMessage(
            id=given(options.task_id, None) or self.broker.new_task_id(queue),
            name=definition.name,
            queue=queue,
            payload=payload,
            priority=given(options.priority, definition.priority),
            eta=_eta(options, now),
            created_at=now,
            retries=config.default_retries if retries is None else retries,
            retry_backoff_s=config.default_retry_backoff_s if backoff is None else backoff,
            timeout_s=given(options.timeout, definition.timeout_s),
            expires_at=_expires_at(given(options.expires, definition.expires), now),
            dedup_key=given(options.dedup_key, None),
            dedup_ttl_s=given(options.dedup_ttl, None),
            store_result=given(options.store_result, definition.store_result),
            parent_id=given(options.parent_id, None),
            order_id=given(options.order_id, None),
            headers=_headers(options),
        )

    def _build_default_message(
        self,
        definition: TaskDefinition,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        now: float,
    ) -> TaskMessage:
        """The hot path: a call with no per-call options, from a template made once per task."""
        template = self._templates.get(definition.name)
        if template is None or template.name != definition.name:
            template = self._build_message(definition, (), {}, _TEMPLATE_OPTIONS, now)
            self._templates[definition.name] = template
        queue = template.queue
        return msgspec.structs.replace(
            template,
            id=self.broker.new_task_id(queue),
            payload=_encode_payload(definition, args, kwargs),
            created_at=now,
            expires_at=(
                None if definition.expires is None else _expires_at(definition.expires, now)
            ),
        )

    # -- reading and managing tasks ---------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord | None:
        """The stored record of a task (the seed's ``QueueTasks.get()``), or None if unknown."""
        await self._ensure_open()
        return await self.storage.get(task_id, now=self.clock.time())

    def result(self, task_id: str) -> AsyncResult[Any]:
        """An `AsyncResult` handle for a task id (from a log, a database, another process)."""
        return AsyncResult(task_id, self)

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancel a task: at once if not started, by request if running."""
        await self._ensure_open()
        return (await self.broker.cancel([task_id], now=self.clock.time()))[0]

    async def dead_letters(self, queue: str | None = None, *, limit: int = 100) -> list[TaskRecord]:
        """Dead-lettered tasks of a queue (default queue if None), newest first."""
        await self._ensure_open()
        return await self.broker.dead_letters(queue or self.config.default_queue, limit=limit)

    async def requeue(self, task_ids: Sequence[str]) -> list[AsyncResult[Any] | None]:
        """Requeue dead letters as new tasks linked to the old ones (``requeued_from``).

        Returns per id an `AsyncResult` for the new task, or None if it was not dead-lettered.
        """
        await self._ensure_open()
        records = await self.storage.get_many(task_ids, now=self.clock.time())
        new_ids = [
            self.broker.new_task_id(r.queue if r is not None else self.config.default_queue)
            for r in records
        ]
        created = await self.broker.requeue_dead(task_ids, now=self.clock.time(), new_ids=new_ids)
        return [None if tid is None else AsyncResult(tid, self) for tid in created]

    def __repr__(self) -> str:
        return (
            f"QueueTasks(name={self.name!r}, broker={type(self.broker).__name__}, "
            f"tasks={len(self._tasks)})"
        )


# -- helpers -------------------------------------------------------------------------------


def _encode_payload(
    definition: TaskDefinition, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> bytes:
    try:
        return encode_value((args, kwargs))
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(_describe_unencodable(definition, args, kwargs, exc)) from None


def _describe_unencodable(
    definition: TaskDefinition,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    exc: Exception,
) -> str:
    names = list(definition.call_signature.parameters)
    for index, value in enumerate(args):
        try:
            encode_value(value)
        except (TypeError, ValueError, OverflowError) as err:
            label = names[index] if index < len(names) else f"#{index}"
            return (
                f"argument {label!r} (position {index}) of task {definition.name!r} cannot be "
                f"encoded: {err}. Pass plain data (str, numbers, dict, list, datetime; a "
                "dataclass or msgspec.Struct arrives as a dict) or an id to look it up by"
            )
    for key, value in kwargs.items():
        try:
            encode_value(value)
        except (TypeError, ValueError, OverflowError) as err:
            return f"argument {key!r} of task {definition.name!r} cannot be encoded: {err}"
    return f"the arguments of task {definition.name!r} cannot be encoded: {exc}"


def _prepared_calls(calls: object) -> list[PreparedTask[Any]]:
    """`calls` as a list, or `InvalidArguments` saying what `add_tasks` takes."""
    example = "e.g. app.add_tasks([add.prepare(1, 2), add.options(priority=9).prepare(3, 4)])"
    if isinstance(calls, PreparedTask):
        raise InvalidArguments(f"app.add_tasks takes a list of prepared calls, not one: {example}")
    if isinstance(calls, str | bytes | Mapping) or not isinstance(calls, Iterable):
        raise InvalidArguments(
            "app.add_tasks takes a list of prepared calls (what task.prepare(...) returns), "
            f"got a {type(calls).__name__}: {example}"
        )
    checked = list(calls)
    for index, call in enumerate(checked):
        if not isinstance(call, PreparedTask):
            raise InvalidArguments(
                "app.add_tasks takes prepared calls (what task.prepare(...) returns), got a "
                f"{type(call).__name__} at index {index} ({call!r:.60}): {example}"
            )
    return checked


def _headers(options: TaskOptions) -> dict[str, str]:
    headers = given(options.headers, _NO_HEADERS)
    key = given(options.idempotency_key, None)
    if key is not None:
        headers = {**headers, "idempotency_key": key}
    return headers


def _eta(options: TaskOptions, now: float) -> float | None:
    """When the task becomes due: its `eta`, or now plus its `delay` (never both: TaskOptions
    refuses that), or None for now."""
    eta = given(options.eta, None)
    if eta is not None:
        return eta
    delay = given(options.delay, None)
    return None if delay is None else now + delay


def _expires_at(expires: float | datetime | None, now: float) -> float | None:
    """The epoch time after which the task is not started: a duration counts from `now`."""
    if expires is None:
        return None
    if isinstance(expires, datetime):
        return expires.timestamp()
    return now + expires


#: Copies of one stop request arrive together: a terminal's Ctrl-C reaches every process of
#: its process group, ``taskflow worker -p N`` forwards it to its children as well, and
#: ``timeout`` and systemd (``KillMode=control-group``) signal every process too. A signal
#: within this long of the first is the same request; a person's deliberate second Ctrl-C
#: comes later.
_REPEAT_WINDOW_S: Final = 1.0


async def _watch_signals(on_stop: Callable[[int], None], on_second: Callable[[int], None]) -> None:
    """Call `on_stop` at the first SIGINT/SIGTERM and `on_second` at a second stop request (a
    signal `_REPEAT_WINDOW_S` or more after the first). Copies of the first signal that arrive
    within the window are logged and ignored, and so is every signal after the second: the
    watcher runs until cancelled, so that no signal meets the default handler (which would end
    the process) while the stop it asked for is under way."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        first: float | None = None
        stopping_now = False
        async for signum in signals:
            name = signal.Signals(signum).name
            now = time.monotonic()
            if stopping_now:
                logger.debug("received %s while stopping now: nothing more to do", name)
            elif first is None:
                first = now
                logger.info(
                    "received %s: stopping gracefully (signal again a second or more later to "
                    "stop at once)",
                    name,
                )
                on_stop(signum)
            elif now - first < _REPEAT_WINDOW_S:
                logger.debug(
                    "received %s again within %.1f s: the same stop request", name, _REPEAT_WINDOW_S
                )
            else:
                logger.warning("second signal (%s): stopping now", name)
                stopping_now = True
                on_second(signum)
