"""`QueueTasks`: the app. Its registry of tasks, config, backend and lifecycle, and the entry
points of everything an app does.

What lives here: the `@app.task` decorator and the registry it fills, the worker hooks'
decorators, open/close, the sending entry points (`add_task`, `add_tasks`), reading and managing
tasks, and the three ways to run workers. The work itself is done by the app's parts, each in a
module of its own:

* ``app.sender`` (`_sending.Sender`): building and enqueueing messages;
* ``app.lifecycle`` (`_lifecycle.AppLifecycle`): which event loop owns the app, opening at first
  use, reopening, and the bridge from synchronous code;
* ``app.hooks`` (`_starter.WorkerHooks`): the startup and shutdown hooks and worker services;
* ``app.schedule_book`` (`_periodic.Periodic`): the schedules `periodic` declares, listed,
  paused and resumed (the loop that enqueues their slots is `_scheduler.py`);
* `_running.py`: `running`, `run_forever` and `run_in_thread`, each through a `Starter`.

These attributes are package-internal (the handles, the worker, the Starter and the
Supervisor use them); they are not part of the documented API. The app is at the top of the
import graph: no module it imports imports it back, the lower ones see it through protocols
(`ClientApp`, `SendingApp`, `WorkerApp`, `StarterApp`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from datetime import datetime, timedelta
from types import MappingProxyType, TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypedDict, TypeVar, overload

from typing_extensions import Unpack

from . import _running
from ._artifacts import DEFAULT_KEEP_S, ArtifactKeeper, resolve_artifact_store
from ._backends import check_app_name, resolve_backend
from ._client import AsyncResult
from ._clock import Clock, SystemClock
from ._config import GlobalConfig, app_config
from ._context import TaskContext, WorkerState
from ._exceptions import TaskRegistrationError
from ._fencing import FencedValue, fenced_get
from ._flow import Flow
from ._flow_status import FlowHandle
from ._leadership import HeldTerms, Leadership, check_leadership_ttl, check_role
from ._lifecycle import AppLifecycle, BackendLink
from ._locking import AppLock, LockWaiters, check_lock_ttl
from ._message import (
    CancelResult,
    FailedAttempt,
    FailurePolicy,
    LeaseInfo,
    TaskRecord,
    WorkerInfo,
)
from ._options import CallOptions, Seconds, TaskDefaults, TaskOptions
from ._periodic import Periodic
from ._schedule import Schedule
from ._schedule_state import ScheduleInfo
from ._sending import Sender
from ._starter import Hook, Starter, WorkerHooks
from ._task import PreparedTask, TaskDefinition, TaskFunc, make_definition
from .abc import ArtifactStore, Broker, Coordination, Storage

__all__ = ["QueueTasks"]

logger = logging.getLogger("taskflow.app")

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")

ExceptionTypes = Sequence[type[BaseException]] | type[BaseException]


class _ArtifactOptions(TypedDict):
    """The artifacts' retention of a task, as ``@app.task(...)`` takes it."""

    artifacts_keep: Seconds | None
    artifacts_delete_after_fetch: bool


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
        artifacts: _ArtifactOptions,
    ) -> None:
        self._app = app
        self._name = name
        self._retry_on = retry_on
        self._dont_retry_on = dont_retry_on
        self._defaults = defaults
        self._artifacts = artifacts

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
            fn, self._name, self._retry_on, self._dont_retry_on, self._defaults, self._artifacts
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
        artifacts: Where the bytes of the files tasks put (``ctx.artifacts.put``) are kept: an
            `ArtifactStore`, or a directory path (a `DirectoryArtifactStore`; a directory every
            host mounts, for workers on several hosts). Default: the backend's own store
            (Redis and PostgreSQL keep them in chunks on their server), else (the in-memory
            backend) a fresh directory under the system's temporary directory that lives and
            dies with the process. The app opens and closes it with the backend.

    Raises:
        ConfigError: a name that cannot name an app, an unknown URL scheme, broker and storage
            on different backends, a broker or storage that is neither a URL nor a backend
            object, a config that is not a `GlobalConfig`, or `artifacts` that is neither a
            store nor a path.
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
        artifacts: ArtifactStore | str | os.PathLike[str] | None = None,
    ) -> None:
        check_app_name(name)
        self.name = name
        self.config = app_config(config)
        self.clock: Clock = clock if clock is not None else SystemClock()
        #: The backend's `Broker` (moving messages); it carries the two below.
        self.broker: Broker = resolve_backend(broker, storage, app=name)
        #: The backend's `Storage` (task records, results, events): ``broker.storage``.
        self.storage: Storage = self.broker.storage
        #: The backend's `Coordination` (leases, reader/writer locks, key-value records):
        #: ``broker.coordination``.
        self.coordination: Coordination = self.broker.coordination
        #: Package-internal: the owners of this process waiting for a lock (`_locking.py`); a
        #: release made here wakes the ones it granted through it.
        self.lock_waiters = LockWaiters()
        #: Package-internal: this app's terms of leadership inside their block (`leading`).
        self.held_terms = HeldTerms()
        self._tasks: dict[str, TaskDefinition] = {}
        self._tasks_view = MappingProxyType(self._tasks)
        #: Package-internal: which event loop owns the app (`_lifecycle.py`).
        #: Where the bytes of the tasks' artifacts are kept (`ArtifactStore`).
        self.artifact_store: ArtifactStore = resolve_artifact_store(artifacts, self.broker, name)
        #: Package-internal: puts, lists, fetches and ends artifacts (`_artifacts.py`).
        self.artifact_keeper = ArtifactKeeper(
            self.artifact_store,
            self.coordination,
            self.clock,
            forget_after_s=self.config.result_ttl_s,
        )
        self.lifecycle = AppLifecycle(
            name, BackendLink(self.broker, self.config, self.artifact_store)
        )
        #: Package-internal: the send path (`_sending.py`); the task handles send through it.
        self.sender = Sender(self)
        #: Package-internal: the worker hooks and services (`_starter.py`).
        self.hooks: WorkerHooks[QueueTasks] = WorkerHooks()
        #: Package-internal: the schedules `periodic` declares (`_periodic.py`).
        self.schedule_book = Periodic()

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
        artifacts_keep: Seconds | None = DEFAULT_KEEP_S,
        artifacts_delete_after_fetch: bool = False,
        **defaults: Unpack[TaskDefaults],
    ) -> _TaskDecorator: ...
    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        retry_on: ExceptionTypes | None = None,
        dont_retry_on: ExceptionTypes | None = None,
        artifacts_keep: Seconds | None = DEFAULT_KEEP_S,
        artifacts_delete_after_fetch: bool = False,
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
            artifacts_keep: Keep the task's artifacts (``ctx.artifacts.put``) this long after
                each is ready (seconds or a `timedelta`; default 72 hours); None: no time
                limit. A put can say otherwise.
            artifacts_delete_after_fetch: Delete each of the task's artifacts after its first
                complete fetch (default False); with `artifacts_keep`, whichever comes first.
            **defaults: The task's default options (`TaskDefaults`: `queue`, `priority`,
                `retries`, `retry_backoff`, `timeout`, `expires`, `store_result`); each call
                can override them with `TaskFunc.options`. Checked by the same rules as per
                call.

        Raises:
            TaskRegistrationError: not a function, or a name already taken.
            InvalidOption: an unknown option, or a value that breaks its option's rule.
        """
        artifacts: _ArtifactOptions = {
            "artifacts_keep": artifacts_keep,
            "artifacts_delete_after_fetch": artifacts_delete_after_fetch,
        }
        if fn is None:
            return _TaskDecorator(self, name, retry_on, dont_retry_on, defaults, artifacts)
        return self._register(fn, name, retry_on, dont_retry_on, defaults, artifacts)

    def _register(
        self,
        fn: Callable[..., Any],
        name: str | None,
        retry_on: ExceptionTypes | None,
        dont_retry_on: ExceptionTypes | None,
        defaults: TaskDefaults,
        artifacts: _ArtifactOptions,
    ) -> TaskFunc[Any, Any]:
        definition = make_definition(
            fn,
            name=name,
            retry_on=retry_on,
            dont_retry_on=dont_retry_on,
            defaults=defaults,
            **artifacts,
        )
        if definition.name in self._tasks and self._tasks[definition.name].fn is not fn:
            raise TaskRegistrationError(
                f"a task named {definition.name!r} is already registered on app {self.name!r}; "
                "give one of them another name with @app.task(name=...)"
            )
        self._tasks[definition.name] = definition
        return TaskFunc(self.sender, definition)

    @property
    def tasks(self) -> Mapping[str, TaskDefinition]:
        """Registered tasks by name (a read-only view, kept up to date)."""
        return self._tasks_view

    def on_startup(self, fn: Hook) -> Hook:
        """Register ``async def hook(state: WorkerState)``, run when a worker process starts
        (before it claims), to create shared resources tasks reach as ``ctx.state``."""
        self.hooks.startup.append(fn)
        return fn

    def on_shutdown(self, fn: Hook) -> Hook:
        """Register ``async def hook(state: WorkerState)``, run when a worker stops (in reverse
        order of registration), to close what `on_startup` opened."""
        self.hooks.shutdown.append(fn)
        return fn

    def worker_service(self, fn: Service) -> Service:
        """Register ``async def service(app, state)`` to run beside the worker in every worker
        process, from after the startup hooks until the worker stops (then it is cancelled).

        Long-running coordinators use it (the orders Supervisor is one: every worker process
        hosts a candidate, and leader election picks the one that acts)."""
        self.hooks.services.append(fn)
        return fn

    # -- periodic tasks --------------------------------------------------------------------

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        tz: str | None = None,
        name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        catch_up: int = 0,
    ) -> Callable[[TaskFunc[P, R]], TaskFunc[P, R]]:
        """Run a task on a schedule, each slot once however many workers run:

        ```python
        @app.periodic(cron="*/5 * * * *", tz="Europe/Moscow")
        @app.task
        async def report() -> None: ...


        @app.periodic(every=timedelta(milliseconds=500), args=("tick",))
        @app.task
        async def generate(kind: str) -> None: ...
        ```

        Every worker process runs a small scheduler (a worker service, no beat process to keep
        single) that enqueues each slot ahead of time as a scheduled task due at the slot, with
        an id made of the schedule's name and the slot's time: the backend lets one enqueue of
        a slot through, whichever worker is first. See the docs' Periodic tasks page.

        Args:
            cron: A five-field cron expression (read in `tz`, DST as Debian's cron does it).
            every: An interval (a timedelta or seconds > 0, sub-second works); slots fall on
                multiples of it since the Unix epoch.
            tz: The IANA time zone of `cron` (default UTC); not allowed with `every`.
            name: The schedule's name (default: the task's name); one task can have several
                schedules under different names.
            args: Positional arguments of every run.
            kwargs: Keyword arguments of every run.
            queue: The queue of the runs (default: the task's).
            catch_up: After every worker was down, run this many of the missed slots (the
                latest ones, oldest first, at most 1000); 0 (the default) skips them and runs
                the next slot only.

        Raises:
            TaskRegistrationError: at decoration: neither or both of `cron` and `every`, an
                invalid cron expression, an unknown time zone, an interval <= 0, a bad
                `catch_up`, a name already declared, or not placed above ``@app.task``.
            InvalidArguments: at decoration: `args` / `kwargs` do not fit the task.
        """

        def declare(task: TaskFunc[P, R]) -> TaskFunc[P, R]:
            self.schedule_book.declare(
                self,
                task,
                cron=cron,
                every=every,
                tz=tz,
                name=name,
                args=tuple(args),
                kwargs=kwargs,
                queue=queue,
                catch_up=catch_up,
            )
            return task

        return declare

    @property
    def periodic_schedules(self) -> Mapping[str, Schedule]:
        """The schedules declared with `periodic`, by name (a read-only view)."""
        return self.schedule_book.schedules

    async def schedules(self) -> list[ScheduleInfo]:
        """Every declared schedule with its state in the backend (shared by every worker):
        next and last slot, paused or not; sorted by name."""
        await self.lifecycle.ensure_open()
        return await self.schedule_book.infos(self.coordination, self.clock.time())

    async def pause_schedule(self, name: str) -> None:
        """Stop enqueueing the named schedule's slots, on every worker (a slot already
        enqueued, at most a second ahead, still runs).

        Raises:
            ScheduleNotFound: no schedule of that name is declared on this app.
        """
        await self.lifecycle.ensure_open()
        await self.schedule_book.set_paused(self, name, True)

    async def resume_schedule(self, name: str) -> None:
        """Enqueue the named schedule's slots again, from the next one (the slots that fell
        due while it was paused are skipped, whatever its ``catch_up``).

        Raises:
            ScheduleNotFound: no schedule of that name is declared on this app.
        """
        await self.lifecycle.ensure_open()
        await self.schedule_book.set_paused(self, name, False)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True while the app is open (connected to its backend) on a live event loop."""
        return self.lifecycle.is_open

    async def open(self) -> None:
        """Connect the backend on the running event loop. ``async with app:`` does this for you.

        Optional: any call that needs the backend opens the app by itself. Opening explicitly
        is how a service fails fast at start-up (a server that is down raises here). Opens
        nest: the backend closes at the outermost `close()`. A closed app opens again.

        Raises:
            BackendUnavailable: the server cannot be reached.
            LifecycleError: the app is open on an event loop still running in another thread.
        """
        await self.lifecycle.open()

    async def close(self) -> None:
        """Undo one `open()`; the outermost one disconnects the backend (so does closing an app
        opened by a call). Closing an app that is not open does nothing; it opens again when
        next used. An app also closes by itself when the event loop it is open on ends."""
        await self.lifecycle.close()

    def close_sync(self) -> None:
        """`close` for synchronous code: close the app on whichever event loop it is open on
        (the private one its blocking calls started when no loop owned it, for example).

        Raises:
            LifecycleError: called on a thread that runs an event loop (use ``await
                app.close()``).
        """
        self.lifecycle.close_sync()

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

    # -- running workers -------------------------------------------------------------------

    def running(
        self, concurrency: int | None = None, *, queues: Sequence[str] | None = None
    ) -> AbstractAsyncContextManager[Starter]:
        """Run a worker inside the caller's event loop for the duration of the block.

        Opens the app for the block and closes it after (an app kept open around the block
        stays open: opens nest). Returns once the worker is ready; installs no signal handlers.
        Leaving the block stops the worker gracefully; cancellation propagates (running tasks
        are released for redelivery).
        """
        return _running.running(self, concurrency, queues)

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
        _running.run_forever(self, concurrency, queues)

    def run_in_thread(
        self, concurrency: int | None = None, *, queues: Sequence[str] | None = None
    ) -> AbstractContextManager[Starter]:
        """Run a worker on an event loop in a background thread, for synchronous programs.

        Inside the block, the blocking calls (`add_task_sync`, `SyncTask`, `SyncResult`) run on
        that loop, which owns the app (it takes the app over from the private loop of earlier
        blocking calls).

        Raises:
            LifecycleError: the app is open on an event loop running in another thread.
        """
        return _running.run_in_thread(self, concurrency, queues)

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
        sender = self.sender
        definition = sender.definition(task_name)
        call_options = TaskOptions.of(options, task=task_name)
        return await sender.send(definition, tuple(args), dict(kwargs or {}), call_options)

    async def add_tasks(
        self, calls: Sequence[PreparedTask[Any]], *, connection: Any = None
    ) -> list[AsyncResult[Any]]:
        """Send many tasks in one backend call: ``await app.add_tasks([add.prepare(1, 2), ...])``.

        Returns one `AsyncResult` per call, in order.

        Raises:
            InvalidArguments: `calls` holds something other than prepared calls (what
                ``task.prepare(...)`` returns).
        """
        return await self.sender.send_many(calls, connection=connection)

    # -- locks -----------------------------------------------------------------------------

    def lock(self, name: str, *, shared: bool = False, ttl: float | None = None) -> AppLock:
        """A reader/writer lock of this app's backend, held for an ``async with`` block:

        ```python
        async with app.lock("dwh.sales", shared=True) as lock:
            await export(table="dwh.sales", fencing_token=lock.token)
        ```

        Shared holders (``shared=True``) hold the lock together; an exclusive holder (the
        default) holds it alone. The block waits its turn in the lock's queue, the lock is
        renewed while the block runs and released when it ends; see `AppLock` for how waiting
        is woken and what happens when a lock is lost, and the docs' Locks page for the rules.

        Args:
            name: The lock's name (any non-empty text up to 200 characters, without NUL); the
                same name is the same lock for every app of the backend, in every process.
            shared: Hold it shared (readers) rather than exclusive (writers).
            ttl: The lease of the hold in seconds: if this process stops renewing it (killed,
                paused), the lock frees itself after at most this long. Default: the app's
                ``lease_s``, renewed every ``heartbeat_s``.

        Raises:
            InvalidOption: a name that breaks the rule above, or a ttl that is not a number
                of seconds > 0.
            LockLost: from the ``async with``, if the lock was lost while the block ran.
        """
        config = self.config
        if ttl is None:
            ttl_s, renew_s = config.lease_s, config.heartbeat_s
        else:
            ttl_s = check_lock_ttl(ttl)
            renew_s = ttl_s / 3
        return AppLock(self, name, shared=shared, ttl_s=ttl_s, renew_s=renew_s)

    # -- leaders ---------------------------------------------------------------------------

    def leadership(
        self, role: str, *, ttl: float | None = None, owner: str | None = None
    ) -> Leadership:
        """Campaign for a named role, and hold it for an ``async with`` block:

        ```python
        async with app.leadership("generator", ttl=2) as term:
            await produce(fencing_token=term.token)
        ```

        One candidate holds a role at a time, in every process of the backend. Entering waits
        until this candidate holds the role (a free role is taken within a tenth of the ttl,
        a dead holder's about a ttl after its last renewal); the role is renewed while the
        block runs and given up when it ends. If the role is lost meanwhile (the process was
        paused past the ttl and another took it, or the store stayed unreachable that long),
        the block is cancelled and `LeadershipLost` is raised. See `Leadership` and the docs'
        Leaders page.

        Args:
            role: The role's name (a non-empty str of at most 200 characters, without NUL);
                the same name is the same role for every app of the backend. Names starting
                with ``taskflow:`` are taskflow's own (the Supervisor's).
            ttl: The role's lease in seconds: a holder that stops renewing (killed, paused)
                loses the role after at most this long. Renewed every third of it. Default:
                the app's ``lease_s``.
            owner: This candidate's id, as `leader_of` shows it; it must be unique to the
                candidate (two candidates with one owner id would both hold the role).
                Default: a fresh id naming the host and pid.

        Raises:
            InvalidOption: a role or ttl that breaks the rules above.
            LeadershipLost: from the ``async with``, if the role was lost while the block ran.
        """
        ttl_s = self.config.lease_s if ttl is None else check_leadership_ttl(ttl)
        return Leadership(self, role, ttl_s=ttl_s, owner=owner)

    async def try_leadership(
        self, role: str, *, ttl: float | None = None, owner: str | None = None
    ) -> Leadership | None:
        """Try once, without waiting, to take a role: the held term, or None if another
        candidate holds it. Enter the term at once - it is renewed only inside its
        ``async with`` block (until then its lease runs out after `ttl`):

        ```python
        term = await app.try_leadership("generator")
        if term is not None:
            async with term:
                await produce(fencing_token=term.token)
        ```

        Arguments as for `leadership`.
        """
        term = self.leadership(role, ttl=ttl, owner=owner)
        return term if await term.try_take() else None

    async def leader_of(self, role: str) -> LeaseInfo | None:
        """Who holds a role now, as the store says: a `LeaseInfo` (``owner``, fencing
        ``token``, ``expires_at`` by the holder's clock), or None if nobody does."""
        await self.lifecycle.ensure_open()
        return await self.coordination.get_lease(check_role(role), now=self.clock.time())

    @property
    def leading(self) -> frozenset[str]:
        """The roles this app holds now (its `leadership` blocks whose term `is_held`), as a
        worker registry or a status line shows them; no call to the store."""
        return self.held_terms.roles()

    async def fenced_get(self, namespace: str, key: str) -> FencedValue | None:
        """Read a fenced record (written by `Leadership.fenced_set`): its value and the
        fencing token of its last writer, or None if there is none."""
        await self.lifecycle.ensure_open()
        return await fenced_get(self.coordination, namespace, key)

    # -- reading and managing tasks ---------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord | None:
        """The stored record of a task (the seed's ``QueueTasks.get()``), or None if unknown."""
        await self.lifecycle.ensure_open()
        return await self.storage.get(task_id, now=self.clock.time())

    def flow(self, name: str, *, after_failure: FailurePolicy | str = FailurePolicy.FAIL) -> Flow:
        """A new flow: a graph of this app's tasks to store and run as one
        (``docs/flows.md``). ``flow.add(task, *args, after=[...], inputs={...})`` adds nodes;
        ``await flow.submit()`` stores them all in one backend call.

        Args:
            name: A label for people (the handle and ``taskflow flow`` show it).
            after_failure: What a node does when a parent ends without a value, unless the
                node says otherwise: `FailurePolicy.FAIL` (the default), ``SKIP`` or ``RUN``.

        Raises:
            InvalidFlow: `name` is not a non-empty string.
            InvalidOption: `after_failure` is not a `FailurePolicy`.
        """
        return Flow(self, name, after_failure=after_failure)

    async def get_flow(self, flow_id: str) -> FlowHandle:
        """A handle on a flow submitted elsewhere (another process, an earlier run), by id.

        Raises:
            FlowNotFound: no task of the flow is stored.
        """
        handle = FlowHandle(self, flow_id)
        await handle.status()
        return handle

    def result(self, task_id: str) -> AsyncResult[Any]:
        """An `AsyncResult` handle for a task id (from a log, a database, another process)."""
        return AsyncResult(task_id, self)

    async def cancel(self, task_id: str) -> CancelResult:
        """Cancel a task: at once if not started, by request if running."""
        await self.lifecycle.ensure_open()
        return (await self.broker.cancel([task_id], now=self.clock.time()))[0]

    async def dead_letters(self, queue: str | None = None, *, limit: int = 100) -> list[TaskRecord]:
        """Dead-lettered tasks of a queue (default queue if None), newest first."""
        await self.lifecycle.ensure_open()
        return await self.broker.dead_letters(queue or self.config.default_queue, limit=limit)

    async def requeue(self, task_ids: Sequence[str]) -> list[AsyncResult[Any] | None]:
        """Requeue dead letters as new tasks linked to the old ones (``requeued_from``).

        Returns per id an `AsyncResult` for the new task, or None if it was not dead-lettered.
        """
        await self.lifecycle.ensure_open()
        records = await self.storage.get_many(task_ids, now=self.clock.time())
        new_ids = [
            self.broker.new_task_id(r.queue if r is not None else self.config.default_queue)
            for r in records
        ]
        created = await self.broker.requeue_dead(task_ids, now=self.clock.time(), new_ids=new_ids)
        return [None if tid is None else AsyncResult(tid, self) for tid in created]

    # -- the worker registry and the error log ---------------------------------------------

    async def workers(self) -> list[WorkerInfo]:
        """Every live worker of this app's backend, in every process and host, sorted by id:
        what each one wrote into the registry with its last heartbeat. A worker whose
        heartbeats stopped (killed, cut off) drops out once its entry lapses, two leases
        (``2 * lease_s``) after its last one; a worker that stops gracefully at once."""
        await self.lifecycle.ensure_open()
        return await self.coordination.list_workers(now=self.clock.time())

    async def errors(
        self,
        *,
        since: float | timedelta | datetime | None = None,
        task: str | None = None,
        queues: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[FailedAttempt]:
        """Failed attempts, newest first: every attempt that raised (or timed out), including
        those that were retried and later succeeded, from the backend's capped error log
        (``errors_maxlen`` per queue).

        Args:
            since: Only attempts at or after this moment: a `datetime`, seconds since the
                epoch, or a `timedelta` back from now (``timedelta(hours=1)``).
            task: Only attempts of the task with this name.
            queues: Only these queues (default: every queue).
            limit: At most this many (>= 1).

        Raises:
            ValueError: `limit` is below 1.
        """
        await self.lifecycle.ensure_open()
        now = self.clock.time()
        return await self.storage.errors(
            since=_moment(since, now), name=task, queues=queues, limit=limit
        )

    def __repr__(self) -> str:
        return (
            f"QueueTasks(name={self.name!r}, broker={type(self.broker).__name__}, "
            f"tasks={len(self._tasks)})"
        )


def _moment(since: float | timedelta | datetime | None, now: float) -> float | None:
    """Seconds since the epoch of a `since` given as a moment or a time back from `now`."""
    if isinstance(since, timedelta):
        return now - since.total_seconds()
    if isinstance(since, datetime):
        return since.timestamp()
    return since
