"""The task decorator's products: `TaskDefinition` (what the worker runs) and the typed handles.

`@app.task` turns a function into a `TaskFunc[P, R]`: calling ``await add.add_task(2, 3)`` is
checked by mypy against the function's own signature (ParamSpec), and options travel apart from
the arguments (``add.options(priority=9).add_task(2, 3)``), so a task parameter named `timeout`
is never mistaken for an option. Building the `TaskMessage` lives in `_app.py`; running it lives
in `_executor.py`.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, ParamSpec, TypeVar

from ._exceptions import TaskRegistrationError

if TYPE_CHECKING:
    from ._app import QueueTasks
    from ._client import AsyncResult

__all__ = ["NOT_GIVEN", "PreparedTask", "TaskCall", "TaskDefinition", "TaskFunc", "TaskOptions"]

P = ParamSpec("P")
R = TypeVar("R")

TaskKind = Literal["async", "sync", "generator", "async_generator"]


class _NotGiven:
    """Sentinel type for "option not given" (distinct from None, which can be a real value)."""

    _instance: _NotGiven | None = None

    def __new__(cls) -> _NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __bool__(self) -> bool:
        return False


NOT_GIVEN: Final = _NotGiven()
"""Marks an option that was not given, so the task's (or the app's) default applies."""

T = TypeVar("T")


def given(value: T | _NotGiven, default: T) -> T:
    """`value`, or `default` if it is `NOT_GIVEN`."""
    return default if isinstance(value, _NotGiven) else value


Seconds = float | int | timedelta
"""A duration: seconds as a number, or a `timedelta`."""
When = float | int | datetime
"""A point in time: seconds since the epoch, or an aware `datetime`."""


@dataclasses.dataclass(frozen=True, slots=True)
class TaskOptions:
    """Per-call options of `TaskFunc.options(...)` / name-based `add_task(...)`.

    Every field left at `NOT_GIVEN` falls back to the task's decorator option, then to
    `GlobalConfig`. See `TaskFunc.options` for their meaning.
    """

    priority: int | _NotGiven = NOT_GIVEN
    delay: Seconds | _NotGiven | None = NOT_GIVEN
    eta: When | _NotGiven | None = NOT_GIVEN
    task_id: str | _NotGiven | None = NOT_GIVEN
    dedup_key: str | _NotGiven | None = NOT_GIVEN
    dedup_ttl: Seconds | _NotGiven | None = NOT_GIVEN
    queue: str | _NotGiven = NOT_GIVEN
    retries: int | _NotGiven = NOT_GIVEN
    retry_backoff: Seconds | _NotGiven = NOT_GIVEN
    timeout: Seconds | _NotGiven | None = NOT_GIVEN
    expires: Seconds | When | _NotGiven | None = NOT_GIVEN
    store_result: bool | _NotGiven = NOT_GIVEN
    parent_id: str | _NotGiven | None = NOT_GIVEN
    order_id: str | _NotGiven | None = NOT_GIVEN
    headers: dict[str, str] | _NotGiven = NOT_GIVEN
    connection: Any = None
    idempotency_key: str | _NotGiven | None = NOT_GIVEN

    def merged(self, other: TaskOptions) -> TaskOptions:
        """These options with every option given in `other` taking precedence."""
        changes = {
            f.name: getattr(other, f.name)
            for f in dataclasses.fields(other)
            if getattr(other, f.name) is not NOT_GIVEN
            and not (f.name == "connection" and other.connection is None)
        }
        return dataclasses.replace(self, **changes) if changes else self


NO_OPTIONS: Final = TaskOptions()
"""The options of a call that sets none (identity-checked on the hot path)."""


@dataclasses.dataclass(slots=True)
class TaskDefinition:
    """A registered task: the function, how to run it, and its defaults."""

    name: str
    fn: Callable[..., Any]
    kind: TaskKind
    queue: str | None
    priority: int
    retries: int | None
    retry_backoff_s: float | None
    timeout_s: float | None
    retry_on: tuple[type[BaseException], ...] | None
    dont_retry_on: tuple[type[BaseException], ...]
    store_result: bool
    expires: Seconds | When | None
    context_param: str | None
    signature: inspect.Signature
    context_index: int | None = None
    """Position of the context parameter among positional parameters (None: pass by name)."""


def to_seconds(value: Seconds, what: str) -> float:
    """A duration option as float seconds; raises ValueError naming `what` if negative."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"{what} must be >= 0 seconds, got {value!r}")
    return seconds


def to_timestamp(value: When) -> float:
    """A point in time as seconds since the epoch (naive datetimes are refused)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(
                f"{value!r} is a naive datetime; pass an aware one, e.g. "
                "datetime(..., tzinfo=timezone.utc)"
            )
        return value.timestamp()
    return float(value)


def _task_kind(fn: Callable[..., Any]) -> TaskKind:
    if inspect.isasyncgenfunction(fn):
        return "async_generator"
    if inspect.isgeneratorfunction(fn):
        return "generator"
    if inspect.iscoroutinefunction(fn):
        return "async"
    return "sync"


def _context_param(fn: Callable[..., Any], signature: inspect.Signature) -> str | None:
    """The name of the parameter annotated with `TaskContext`, if any."""
    from ._context import TaskContext

    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: fall back to the raw ones
        hints = {name: p.annotation for name, p in signature.parameters.items()}
    for name, param in signature.parameters.items():
        hint = hints.get(name, param.annotation)
        # A raw string when other annotations cannot be resolved (TYPE_CHECKING imports):
        # "TaskContext" or "taskflow.TaskContext".
        if hint is TaskContext or (
            isinstance(hint, str) and hint.rpartition(".")[2] == "TaskContext"
        ):
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TaskRegistrationError(
                    f"{getattr(fn, '__qualname__', fn)}: the TaskContext parameter {name!r} "
                    "cannot be *args/**kwargs"
                )
            return name
    return None


def make_definition(
    fn: Callable[..., Any],
    *,
    name: str | None,
    queue: str | None,
    priority: int,
    retries: int | None,
    retry_backoff: Seconds | None,
    timeout: Seconds | None,
    retry_on: Sequence[type[BaseException]] | type[BaseException] | None,
    dont_retry_on: Sequence[type[BaseException]] | type[BaseException] | None,
    store_result: bool,
    expires: Seconds | When | None,
) -> TaskDefinition:
    """Validate the decorator's options and build the definition the worker runs."""
    if not callable(fn):
        raise TaskRegistrationError(f"@app.task needs a function, got {fn!r}")
    if isinstance(fn, staticmethod | classmethod):
        raise TaskRegistrationError(
            "@app.task goes on a plain function; put it below @staticmethod, or use a "
            "module-level function"
        )
    # The default name is the function's own (as in the seed's client: add_task("add", ...));
    # two tasks of one name on an app are refused, so a clash is caught at import time.
    qualname = getattr(fn, "__qualname__", None)
    if name is None and qualname is None:
        raise TaskRegistrationError(
            f"{fn!r} has no __qualname__ (a functools.partial or a callable object): give the "
            "task a name with @app.task(name=...)"
        )
    task_name = name or str(qualname).replace(".<locals>", "")
    signature = inspect.signature(fn)
    context_param = _context_param(fn, signature)
    if retries is not None and (not isinstance(retries, int) or retries < 0):
        raise TaskRegistrationError(
            f"task {task_name!r}: retries must be an integer >= 0, got {retries!r}"
        )
    backoff_s = _duration_option(task_name, "retry_backoff", retry_backoff)
    timeout_s = _duration_option(task_name, "timeout", timeout)
    return TaskDefinition(
        name=task_name,
        fn=fn,
        kind=_task_kind(fn),
        queue=queue,
        priority=int(priority),
        retries=retries,
        retry_backoff_s=backoff_s,
        timeout_s=timeout_s,
        retry_on=_exception_tuple(retry_on, "retry_on"),
        dont_retry_on=_exception_tuple(dont_retry_on, "dont_retry_on") or (),
        store_result=store_result,
        expires=expires,
        context_param=context_param,
        signature=signature,
        context_index=_positional_index(signature, context_param),
    )


def _duration_option(task_name: str, what: str, value: Seconds | None) -> float | None:
    if value is None:
        return None
    try:
        return to_seconds(value, what)
    except (TypeError, ValueError):
        raise TaskRegistrationError(
            f"task {task_name!r}: {what} must be seconds >= 0 (a number or a timedelta), "
            f"got {value!r}"
        ) from None


def _positional_index(signature: inspect.Signature, name: str | None) -> int | None:
    if name is None:
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for index, param in enumerate(signature.parameters.values()):
        if param.name == name:
            return index if param.kind in positional else None
    return None


def _exception_tuple(
    value: Sequence[type[BaseException]] | type[BaseException] | None, what: str
) -> tuple[type[BaseException], ...] | None:
    if value is None:
        return None
    items = (value,) if isinstance(value, type) else tuple(value)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TaskRegistrationError(f"{what} takes exception classes, got {item!r}")
    return items


class PreparedTask(Generic[R]):
    """A task call with its arguments and options bound, ready for `QueueTasks.add_tasks`."""

    __slots__ = ("args", "definition", "kwargs", "options")

    def __init__(
        self,
        definition: TaskDefinition,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> None:
        self.definition = definition
        self.args = args
        self.kwargs = kwargs
        self.options = options

    def __repr__(self) -> str:
        return f"PreparedTask({self.definition.name!r}, args={self.args!r}, kwargs={self.kwargs!r})"


class TaskCall(Generic[P, R]):
    """A task with per-call options bound; made by `TaskFunc.options(...)`."""

    __slots__ = ("_app", "_definition", "_options")

    def __init__(self, app: QueueTasks, definition: TaskDefinition, options: TaskOptions) -> None:
        self._app = app
        self._definition = definition
        self._options = options

    async def add_task(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Enqueue one run of the task with these options; returns its result handle."""
        return await self._app._enqueue_one(self._definition, args, kwargs, self._options)

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> PreparedTask[R]:
        """Bind arguments without sending, for `QueueTasks.add_tasks` (one backend call)."""
        return PreparedTask(self._definition, args, kwargs, self._options)

    def options(self, **options: Any) -> TaskCall[P, R]:
        """More options on top of these (later ones win)."""
        return TaskCall(self._app, self._definition, self._options.merged(TaskOptions(**options)))


class TaskFunc(Generic[P, R]):
    """A registered task. Call it to run the function here; `add_task` to run it on a worker.

    `R` is the value `result()` gives back: the function's return value, or for a generator
    function the list of what it yielded.
    """

    __slots__ = ("__dict__", "_app", "definition")

    def __init__(self, app: QueueTasks, definition: TaskDefinition) -> None:
        self._app = app
        self.definition = definition
        self.__name__ = getattr(definition.fn, "__name__", definition.name)
        self.__doc__ = definition.fn.__doc__
        self.__wrapped__ = definition.fn

    @property
    def name(self) -> str:
        """The registered task name (what name-based `add_task` takes)."""
        return self.definition.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function directly, in this process (no queue, no worker)."""
        return self.definition.fn(*args, **kwargs)

    async def add_task(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Enqueue one run of the task with the arguments given; returns its result handle.

        Raises:
            EncodeError: an argument cannot be encoded with msgspec (the message names it).
            LifecycleError: the app is not open.
        """
        return await self._app._enqueue_one(self.definition, args, kwargs, NO_OPTIONS)

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> PreparedTask[R]:
        """Bind arguments without sending, for `QueueTasks.add_tasks` (one backend call)."""
        return PreparedTask(self.definition, args, kwargs, NO_OPTIONS)

    def options(
        self,
        *,
        priority: int | _NotGiven = NOT_GIVEN,
        delay: Seconds | _NotGiven | None = NOT_GIVEN,
        eta: When | _NotGiven | None = NOT_GIVEN,
        task_id: str | _NotGiven | None = NOT_GIVEN,
        dedup_key: str | _NotGiven | None = NOT_GIVEN,
        dedup_ttl: Seconds | _NotGiven | None = NOT_GIVEN,
        queue: str | _NotGiven = NOT_GIVEN,
        retries: int | _NotGiven = NOT_GIVEN,
        retry_backoff: Seconds | _NotGiven = NOT_GIVEN,
        timeout: Seconds | _NotGiven | None = NOT_GIVEN,
        expires: Seconds | When | _NotGiven | None = NOT_GIVEN,
        store_result: bool | _NotGiven = NOT_GIVEN,
        parent_id: str | _NotGiven | None = NOT_GIVEN,
        order_id: str | _NotGiven | None = NOT_GIVEN,
        headers: dict[str, str] | _NotGiven = NOT_GIVEN,
        connection: Any = None,
        idempotency_key: str | _NotGiven | None = NOT_GIVEN,
    ) -> TaskCall[P, R]:
        """Options for the next call, kept apart from the task's own arguments.

        Args:
            priority: Higher runs first within a queue; FIFO within a priority.
            delay: Run no sooner than this long from now (seconds or timedelta).
            eta: Run no sooner than this time (epoch seconds or aware datetime).
            task_id: Use this id instead of a generated one (adding an id twice returns the
                first task's handle).
            dedup_key: While a task of this queue with this key is live, adding another returns
                the existing handle.
            dedup_ttl: Keep the dedup key this long after the task finishes.
            queue: Queue to send to.
            retries: Retries after the first attempt before dead-lettering.
            retry_backoff: Base of the exponential backoff between retries.
            timeout: Cancel an async run after this long (a sync function cannot be interrupted).
            expires: Do not start after this time (duration from now, or a point in time).
            store_result: False for fire-and-forget: the result is not stored.
            parent_id: Id of the task that spawned this one.
            order_id: Id of the order this task belongs to.
            headers: Small string metadata carried with the message.
            idempotency_key: What `ctx.idempotency_key` says (default: the task id). Give a key
                of your own to keep it stable across requeues and resubmissions.
            connection: Backend transaction handle (PostgreSQL: an asyncpg connection inside a
                transaction) so the task exists only if that transaction commits.
        """
        options = TaskOptions(
            priority=priority,
            delay=delay,
            eta=eta,
            task_id=task_id,
            dedup_key=dedup_key,
            dedup_ttl=dedup_ttl,
            queue=queue,
            retries=retries,
            retry_backoff=retry_backoff,
            timeout=timeout,
            expires=expires,
            store_result=store_result,
            parent_id=parent_id,
            order_id=order_id,
            headers=headers,
            connection=connection,
            idempotency_key=idempotency_key,
        )
        return TaskCall(self._app, self.definition, options)

    def __repr__(self) -> str:
        return f"<TaskFunc {self.definition.name!r} ({self.definition.kind})>"
