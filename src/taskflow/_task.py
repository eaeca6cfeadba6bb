"""The task decorator's products: `TaskDefinition` (what the worker runs) and the typed handles
(`TaskFunc`, `TaskCall`, `PreparedTask`).

`@app.task` turns a function into a `TaskFunc[P, R]`: calling ``await add.add_task(2, 3)`` is
checked by mypy against the function's own signature (ParamSpec), and options travel apart from
the arguments (``add.options(priority=9).add_task(2, 3)``), so a task parameter named `timeout`
is never mistaken for an option. The arguments are bound to the signature when the task is sent
(`TaskDefinition.check_arguments`, made by `argument_check`), so a call that cannot bind fails in
the producer, before anything is stored.

A handle sends through its app's `TaskSender` (the app's `Sender`, `_sending.py`), so this module
never imports the app. What does not live here: the options and their rules (`_options.py`),
building and sending the `TaskMessage` (`_sending.py`), running it (`_executor.py`).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
)

from typing_extensions import Unpack

from ._artifacts import DEFAULT_KEEP_S, DEFAULT_RETENTION, Retention
from ._exceptions import InvalidArguments, InvalidOption, TaskRegistrationError
from ._lock_types import DeclaredLock
from ._message import Hedge
from ._options import (
    DEFAULT_OPTION_NAMES,
    NO_OPTIONS,
    CallOptions,
    Seconds,
    TaskOptions,
    check_option_names,
    given,
)

if TYPE_CHECKING:
    from ._client import AsyncResult, SyncResult

__all__ = [
    "ArgumentCheck",
    "PreparedTask",
    "TaskCall",
    "TaskDefinition",
    "TaskFunc",
    "TaskKind",
    "TaskSender",
    "argument_check",
    "make_definition",
]

P = ParamSpec("P")
R = TypeVar("R")

TaskKind = Literal["async", "sync", "generator", "async_generator"]


class TaskSender(Protocol):
    """How a task handle sends one call: the app's `Sender` (`_sending.py`)."""

    async def send(
        self,
        definition: TaskDefinition,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: TaskOptions,
    ) -> AsyncResult[Any]:
        """Check, build and enqueue one call; its result handle."""
        ...

    def send_sync(
        self,
        definition: TaskDefinition,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: TaskOptions,
    ) -> SyncResult[Any]:
        """`send` from synchronous code."""
        ...


ArgumentCheck = Callable[[tuple[Any, ...], Mapping[str, Any]], None]
"""Raises `InvalidArguments` unless ``fn(*args, **kwargs)`` would bind (context aside)."""


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
    expires: float | datetime | None
    """A duration in seconds, or an aware datetime; None: never."""
    locks: tuple[DeclaredLock, ...]
    """The reader/writer locks its runs take before they start (the ``locks`` option)."""
    context_param: str | None
    signature: inspect.Signature
    call_signature: inspect.Signature
    """What a caller passes: `signature` without the `TaskContext` parameter."""
    check_arguments: ArgumentCheck
    """Raises `InvalidArguments` unless the caller's ``(args, kwargs)`` bind to
    `call_signature`; called on every send."""
    context_index: int | None = None
    """Position of the context parameter among positional parameters (None: pass by name)."""
    artifacts: Retention = DEFAULT_RETENTION
    """How long the task's artifacts are kept (``artifacts_keep``,
    ``artifacts_delete_after_fetch``); each put can say otherwise."""
    hedge: Hedge | None = None
    """When a run gets a hedge copy (the ``hedge`` option); None: never."""


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
    retry_on: Sequence[type[BaseException]] | type[BaseException] | None,
    dont_retry_on: Sequence[type[BaseException]] | type[BaseException] | None,
    defaults: Mapping[str, Any],
    artifacts_keep: Seconds | None = DEFAULT_KEEP_S,
    artifacts_delete_after_fetch: bool = False,
) -> TaskDefinition:
    """Check the decorator's options and build the definition the worker runs.

    Raises:
        TaskRegistrationError: `fn` is not a function taskflow can run, or has no name.
        InvalidOption: an option (in `defaults`, `retry_on` / `dont_retry_on`, or the
            artifacts' retention) breaks its rule.
    """
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
    if name is not None and not isinstance(name, str):
        raise TaskRegistrationError(f"a task name is a string, got {name!r}")
    task_name = name or str(qualname).replace(".<locals>", "")
    if not task_name or "\x00" in task_name:
        raise TaskRegistrationError(
            f"task name {task_name!r} cannot be stored: give a non-empty name without NUL"
        )
    check_option_names(defaults, DEFAULT_OPTION_NAMES, task_name)
    options = TaskOptions.of(defaults, task=task_name)
    try:
        artifacts = DEFAULT_RETENTION.overridden(artifacts_keep, artifacts_delete_after_fetch)
    except InvalidOption as exc:
        raise InvalidOption(f"task {task_name!r}: artifacts_{exc}") from None
    signature = inspect.signature(fn)
    context_param = _context_param(fn, signature)
    call_signature = _without(signature, context_param)
    return TaskDefinition(
        name=task_name,
        fn=fn,
        kind=_task_kind(fn),
        queue=given(options.queue, None),
        priority=given(options.priority, 0),
        retries=given(options.retries, None),
        retry_backoff_s=given(options.retry_backoff, None),
        timeout_s=given(options.timeout, None),
        retry_on=_exception_tuple(task_name, retry_on, "retry_on"),
        dont_retry_on=_exception_tuple(task_name, dont_retry_on, "dont_retry_on") or (),
        store_result=given(options.store_result, True),
        expires=given(options.expires, None),
        locks=given(options.locks, ()),
        context_param=context_param,
        signature=signature,
        call_signature=call_signature,
        check_arguments=argument_check(task_name, call_signature, context_param),
        context_index=_positional_index(signature, context_param),
        artifacts=artifacts,
        hedge=given(options.hedge, None),
    )


def _without(signature: inspect.Signature, name: str | None) -> inspect.Signature:
    if name is None:
        return signature
    return signature.replace(
        parameters=[p for p in signature.parameters.values() if p.name != name]
    )


# -- binding arguments at the producer ---------------------------------------------------------

_POSITIONAL_OR_KEYWORD: Final = inspect.Parameter.POSITIONAL_OR_KEYWORD


def argument_check(
    task_name: str, signature: inspect.Signature, context_param: str | None = None
) -> ArgumentCheck:
    """A check that a call's ``(args, kwargs)`` bind to `signature`, run on every send.

    `inspect.Signature.bind` alone would cost about 1.3 µs for ``add(1, 2)``, on a memory
    backend send of about 3 µs. For the common signature (every parameter positional-or-keyword)
    counting positions and looking up keyword names decides it: about 30 ns over an empty call
    for ``add(1, 2)``, 220 ns for ``add(1, b=2)``. Any other signature, and any call the fast
    check does not accept, goes to `bind`, which also words the error.

    Measured on and off in one run (2-core shared VM, medians of interleaved runs; "bind" is
    `bind` alone): memory adapter A1 on 297k / off 270k / bind 241k tasks/s, A2 297k / 306k /
    260k (``--n 100000``: on and off within the run-to-run noise of about 10 %); Redis A1 on
    15.5k / off 16.0k tasks/s, A2 91k / 96k (noise of about 25 % on this machine). The
    ``add(a, b)`` send on memory: on 2.7 µs, off 3.1 µs, bind 4.8 µs (best of 11 rounds).

    Args:
        task_name: For the error message.
        signature: What the caller passes (the function's, without its `TaskContext`).
        context_param: The name of the function's `TaskContext` parameter, if it has one (the
            error message says the worker passes it).

    Raises (from the returned check):
        InvalidArguments: the arguments do not bind; the message names the problem and the
            parameters.
    """
    params = list(signature.parameters.values())
    # As a caller writes it: no annotations (they may be strings), no TaskContext.
    shown = signature.replace(
        parameters=[p.replace(annotation=p.empty) for p in params],
        return_annotation=signature.empty,
    )
    context = (
        f" ({context_param}, its TaskContext, is passed by the worker)" if context_param else ""
    )

    def bind(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArguments(
                f"task {task_name!r} takes {shown}{context}: {exc}; nothing was sent"
            ) from None

    if not all(p.kind is _POSITIONAL_OR_KEYWORD for p in params):
        return bind
    return _fast_check(params, bind)


def _fast_check(params: list[inspect.Parameter], bind: ArgumentCheck) -> ArgumentCheck:
    """The check of a signature whose parameters are all positional-or-keyword: counting
    positions and looking up keyword names, falling back to `bind` (which words the error) for
    any call it does not accept."""
    total = len(params)
    # Python puts parameters without a default first, so positions < required are required.
    required = sum(1 for p in params if p.default is inspect.Parameter.empty)
    position = {p.name: index for index, p in enumerate(params)}

    def keywords_complete(given_positionally: int, kwargs: Mapping[str, Any]) -> bool:
        """Whether `kwargs` fill the required parameters after the positional ones, each
        known and given once."""
        missing = max(required - given_positionally, 0)
        for key in kwargs:
            index = position.get(key)
            if index is None or index < given_positionally:
                return False  # unknown, or given twice: let bind() word it
            if index < required:
                missing -= 1
        return missing == 0

    def check(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        given_positionally = len(args)
        if not kwargs:
            if required <= given_positionally <= total:
                return
        elif given_positionally <= total and keywords_complete(given_positionally, kwargs):
            return
        bind(args, kwargs)

    return check


def _positional_index(signature: inspect.Signature, name: str | None) -> int | None:
    if name is None:
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for index, param in enumerate(signature.parameters.values()):
        if param.name == name:
            return index if param.kind in positional else None
    return None


def _exception_tuple(
    task_name: str,
    value: Sequence[type[BaseException]] | type[BaseException] | None,
    what: str,
) -> tuple[type[BaseException], ...] | None:
    if value is None:
        return None
    try:
        items = (value,) if isinstance(value, type) else tuple(value)
    except TypeError:
        items = (value,)  # type: ignore[assignment]  # refused just below
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise InvalidOption(
                f"task {task_name!r}: {what} takes exception classes, got {item!r}; "
                f"e.g. {what}=(ConnectionError, TimeoutError)"
            )
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

    __slots__ = ("_definition", "_options", "_sender")

    def __init__(
        self, sender: TaskSender, definition: TaskDefinition, options: TaskOptions
    ) -> None:
        self._sender = sender
        self._definition = definition
        self._options = options

    async def add_task(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Enqueue one run of the task with these options; returns its result handle.

        Raises:
            InvalidArguments: the arguments do not fit the task's signature (nothing is sent).
            EncodeError: an argument cannot be encoded with msgspec (the message names it).
        """
        return await self._sender.send(self._definition, args, kwargs, self._options)

    def add_task_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncResult[R]:
        """`add_task` for synchronous code (see `TaskFunc.add_task_sync`)."""
        return self._sender.send_sync(self._definition, args, kwargs, self._options)

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> PreparedTask[R]:
        """Bind arguments without sending, for `QueueTasks.add_tasks` (one backend call).

        Raises:
            InvalidArguments: the arguments do not fit the task's signature.
        """
        self._definition.check_arguments(args, kwargs)
        return PreparedTask(self._definition, args, kwargs, self._options)

    def options(self, **options: Unpack[CallOptions]) -> TaskCall[P, R]:
        """More options on top of these (later ones win); the same options as
        `TaskFunc.options`.

        Raises:
            InvalidOption: an unknown option, or a value that breaks its option's rule.
        """
        more = TaskOptions.of(options, task=self._definition.name)
        return TaskCall(self._sender, self._definition, self._options.merged(more))


class TaskFunc(Generic[P, R]):
    """A registered task. Call it to run the function here; `add_task` to run it on a worker.

    `R` is the value `result()` gives back: the function's return value, or for a generator
    function the list of what it yielded.
    """

    __slots__ = ("__dict__", "_sender", "definition")

    def __init__(self, sender: TaskSender, definition: TaskDefinition) -> None:
        self._sender = sender
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

        Opens the app on the running event loop if it is not open there.

        Raises:
            InvalidArguments: the arguments do not fit the task's signature (nothing is sent).
            EncodeError: an argument cannot be encoded with msgspec (the message names it).
            LifecycleError: the app is open on an event loop running in another thread.
        """
        return await self._sender.send(self.definition, args, kwargs, NO_OPTIONS)

    def add_task_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncResult[R]:
        """`add_task` for synchronous code: blocks until the task is stored and returns its
        `SyncResult` (``add.add_task_sync(2, 3).result(timeout=5)``); checked by mypy like
        `add_task`.

        Runs on the event loop that owns the app if one runs in another thread (a worker in
        `app.run_in_thread()`, a web server), else on a private loop in a background thread,
        where the app opens at the first call and stays open until `app.close_sync()` or the
        end of the program.

        Raises:
            InvalidArguments: the arguments do not fit the task's signature (nothing is sent).
            EncodeError: an argument cannot be encoded with msgspec (the message names it).
            LifecycleError: called on a thread that runs an event loop (there, ``await
                add_task(...)``).
        """
        return self._sender.send_sync(self.definition, args, kwargs, NO_OPTIONS)

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> PreparedTask[R]:
        """Bind arguments without sending, for `QueueTasks.add_tasks` (one backend call).

        Raises:
            InvalidArguments: the arguments do not fit the task's signature.
        """
        self.definition.check_arguments(args, kwargs)
        return PreparedTask(self.definition, args, kwargs, NO_OPTIONS)

    def options(self, **options: Unpack[CallOptions]) -> TaskCall[P, R]:
        """Options for the next call, kept apart from the task's own arguments.

        ``add.options(priority=9, delay=timedelta(seconds=5)).add_task(2, 3)``. The options
        are those of `CallOptions` (the same wherever options are given: here, on a
        `TaskCall`, and by name through `QueueTasks.add_task`, `AsyncTask` and `SyncTask`);
        each one is checked here, once, by its rule.

        Raises:
            InvalidOption: an unknown option, or a value that breaks its option's rule (the
                message names the option, the rule and the value).
        """
        return TaskCall(self._sender, self.definition, TaskOptions.of(options, task=self.name))

    def __repr__(self) -> str:
        return f"<TaskFunc {self.definition.name!r} ({self.definition.kind})>"
