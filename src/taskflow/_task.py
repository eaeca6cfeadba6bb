"""The task decorator's products: `TaskDefinition` (what the worker runs), the typed handles, and
the one schema of task options.

`@app.task` turns a function into a `TaskFunc[P, R]`: calling ``await add.add_task(2, 3)`` is
checked by mypy against the function's own signature (ParamSpec), and options travel apart from
the arguments (``add.options(priority=9).add_task(2, 3)``), so a task parameter named `timeout`
is never mistaken for an option. The arguments are bound to the signature when the task is sent
(`TaskDefinition.check_arguments`), so a call that cannot bind fails in the producer, before
anything is stored.

Options have one schema: `TaskDefaults` (what ``@app.task(...)`` takes) and `CallOptions` (what
one call takes: the defaults plus when, which id, links and headers) are TypedDicts that every
entry point takes as ``**options: Unpack[...]``, so mypy checks option names and types wherever
they are given. `TaskOptions` holds them checked, each by its one rule in `_RULES`, whichever
entry point they came through. Building the `TaskMessage` lives in `_app.py`; running it lives in
`_executor.py`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Generic,
    Literal,
    ParamSpec,
    TypedDict,
    TypeVar,
)

from typing_extensions import Unpack

from ._exceptions import InvalidArguments, InvalidOption, TaskRegistrationError

if TYPE_CHECKING:
    from ._app import QueueTasks
    from ._client import AsyncResult, SyncResult

__all__ = [
    "NOT_GIVEN",
    "CallOptions",
    "PreparedTask",
    "TaskCall",
    "TaskDefaults",
    "TaskDefinition",
    "TaskFunc",
    "TaskOptions",
]

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


class TaskDefaults(TypedDict, total=False):
    """The options ``@app.task(...)`` sets as a task's defaults; each call can override them.

    An option left out falls back to `GlobalConfig` (`default_queue`, `default_retries`,
    `default_retry_backoff_s`) or to the default named below. Each option has one rule, checked
    where it is given (`InvalidOption` otherwise), the same here and per call.

    Attributes:
        queue: The queue the task is sent to (a non-empty string).
        priority: Higher runs first within a queue; FIFO within a priority (an integer from
            -2**31 to 2**31 - 1; default 0).
        retries: Retries after the first attempt before the task is dead-lettered (an integer
            >= 0).
        retry_backoff: Base of the exponential backoff between retries (seconds >= 0, or a
            `timedelta`).
        timeout: Interrupt an async run after this long (seconds > 0, or a `timedelta`; a sync
            function cannot be interrupted); None: no timeout (the default).
        expires: Do not start the task after this: a duration from when it is sent (seconds
            >= 0, or a `timedelta`) or a point in time (an aware `datetime`); None: never
            (the default). A number is always a duration.
        store_result: False for fire-and-forget: the result is not stored (default True).
    """

    queue: str
    priority: int
    retries: int
    retry_backoff: Seconds
    timeout: Seconds | None
    expires: Seconds | datetime | None
    store_result: bool


class CallOptions(TaskDefaults, total=False):
    """The options of one call: `TaskDefaults` (overriding the task's) and the ones below.

    What ``task.options(...)``, ``app.add_task(name, ...)``, ``AsyncTask(app).add_task(...)``
    and ``SyncTask(app).add_task(...)`` take, as keyword arguments.

    Attributes:
        delay: Run no sooner than this long from now (seconds >= 0, or a `timedelta`).
        eta: Run no sooner than this time (an aware `datetime`, or epoch seconds); not together
            with `delay` (when options are chained, the later of the two wins).
        task_id: Use this id instead of a generated one (adding an id twice returns the first
            task's handle).
        dedup_key: While a task of this queue with this key is live, adding another returns the
            existing handle.
        dedup_ttl: Keep the dedup key this long after the task finishes (seconds >= 0, or a
            `timedelta`).
        parent_id: Id of the task that spawned this one.
        order_id: Id of the order this task belongs to.
        headers: Small string metadata carried with the message (keys and values are `str`).
        idempotency_key: What `ctx.idempotency_key` says (default: the task id). Give a key of
            your own to keep it stable across requeues and resubmissions.
        connection: Backend transaction handle (PostgreSQL: an asyncpg connection inside a
            transaction) so the task exists only if that transaction commits.
    """

    delay: Seconds | None
    eta: When | None
    task_id: str | None
    dedup_key: str | None
    dedup_ttl: Seconds | None
    parent_id: str | None
    order_id: str | None
    headers: Mapping[str, str]
    idempotency_key: str | None
    connection: Any


@dataclasses.dataclass(frozen=True, slots=True)
class TaskOptions:
    """Options of one call (or a task's defaults), each checked by its rule and normalized.

    Build it with `TaskOptions.of(options)`; constructing it directly checks the values the same
    way. Every field left at `NOT_GIVEN` falls back to the task's decorator option, then to
    `GlobalConfig`. Durations are float seconds; `eta` is epoch seconds; `expires` is float
    seconds (a duration) or an aware `datetime`.

    Raises:
        InvalidOption: a value breaks its option's rule, or `delay` and `eta` are both given.
    """

    priority: int | _NotGiven = NOT_GIVEN
    delay: float | _NotGiven | None = NOT_GIVEN
    eta: float | _NotGiven | None = NOT_GIVEN
    task_id: str | _NotGiven | None = NOT_GIVEN
    dedup_key: str | _NotGiven | None = NOT_GIVEN
    dedup_ttl: float | _NotGiven | None = NOT_GIVEN
    queue: str | _NotGiven = NOT_GIVEN
    retries: int | _NotGiven = NOT_GIVEN
    retry_backoff: float | _NotGiven = NOT_GIVEN
    timeout: float | _NotGiven | None = NOT_GIVEN
    expires: float | datetime | _NotGiven | None = NOT_GIVEN
    store_result: bool | _NotGiven = NOT_GIVEN
    parent_id: str | _NotGiven | None = NOT_GIVEN
    order_id: str | _NotGiven | None = NOT_GIVEN
    headers: dict[str, str] | _NotGiven = NOT_GIVEN
    connection: Any = None
    idempotency_key: str | _NotGiven | None = NOT_GIVEN

    def __post_init__(self) -> None:
        for name, (normalize, rule) in _RULES.items():
            value = getattr(self, name)
            if value is NOT_GIVEN:
                continue
            normalized = normalize(value)
            if normalized is _BAD:
                raise InvalidOption(f"{name} must be {rule}, got {value!r}")
            object.__setattr__(self, name, normalized)
        if given(self.delay, None) is not None and given(self.eta, None) is not None:
            raise InvalidOption(
                f"give either delay= or eta=, not both (got delay={self.delay!r}, eta={self.eta!r})"
            )

    @classmethod
    def of(cls, options: Mapping[str, Any], *, task: str | None = None) -> TaskOptions:
        """Check `options` (keyword arguments of `CallOptions`) and build them.

        Args:
            options: Option name -> value, as given by the caller.
            task: The task's name, for the error message.

        Raises:
            InvalidOption: an unknown option name, or a value that breaks its rule.
        """
        if not options:
            return NO_OPTIONS
        _check_names(options, CALL_OPTION_NAMES, task)
        try:
            return cls(**options)
        except InvalidOption as exc:
            if task is None:
                raise
            raise InvalidOption(f"task {task!r}: {exc}") from None

    def merged(self, other: TaskOptions) -> TaskOptions:
        """These options with every option given in `other` taking precedence.

        `delay` and `eta` are two ways to say when: the one `other` gives replaces both.
        """
        changes = {
            f.name: getattr(other, f.name)
            for f in dataclasses.fields(other)
            if getattr(other, f.name) is not NOT_GIVEN
            and not (f.name == "connection" and other.connection is None)
        }
        if "delay" in changes or "eta" in changes:
            changes.setdefault("delay", NOT_GIVEN)
            changes.setdefault("eta", NOT_GIVEN)
        return dataclasses.replace(self, **changes) if changes else self


CALL_OPTION_NAMES: Final = frozenset(CallOptions.__optional_keys__)
"""Every per-call option (the fields of `TaskOptions`)."""
DEFAULT_OPTION_NAMES: Final = frozenset(TaskDefaults.__optional_keys__)
"""The options a task's decorator can set."""


def _check_names(options: Mapping[str, Any], known: frozenset[str], task: str | None) -> None:
    for name in options:
        if name in known:
            continue
        where = f"task {task!r}: " if task is not None else ""
        if name in CALL_OPTION_NAMES:
            raise InvalidOption(
                f"{where}{name} is an option of one call, not a task default: give it per call, "
                f"e.g. task.options({name}=...).add_task(...)"
            )
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidOption(
            f"{where}unknown option {name!r}{hint}; the options are: {', '.join(sorted(known))}"
        )


# -- the rules: each option's one check, used wherever the option is given -------------------


class _Bad:
    """What a normalizer returns for a value that breaks its rule."""


_BAD: Final = _Bad()

Normalizer = Callable[[Any], Any]


def _integer(low: int, high: int) -> Normalizer:
    def normalize(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return int(value)
        return _BAD

    return normalize


def _seconds(value: Any, *, positive: bool = False) -> Any:
    """A duration as finite float seconds >= 0 (> 0 if `positive`), or `_BAD`."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            return _BAD
    else:
        return _BAD
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        return _BAD
    return seconds


def _positive_seconds(value: Any) -> Any:
    return _seconds(value, positive=True)


def _aware(value: Any) -> bool:
    return isinstance(value, datetime) and value.utcoffset() is not None


def _instant(value: Any) -> Any:
    """A point in time as epoch seconds: an aware datetime, or a finite number."""
    if isinstance(value, datetime):
        return value.timestamp() if _aware(value) else _BAD
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            timestamp = float(value)
        except OverflowError:
            return _BAD
        return timestamp if math.isfinite(timestamp) else _BAD
    return _BAD


def _expiry(value: Any) -> Any:
    """A duration (float seconds) or an aware datetime, kept as given."""
    if isinstance(value, datetime):
        return value if _aware(value) else _BAD
    return _seconds(value)


def _text(value: Any) -> Any:
    return value if isinstance(value, str) and value else _BAD


def _flag(value: Any) -> Any:
    return value if isinstance(value, bool) else _BAD


def _headers(value: Any) -> Any:
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return dict(value)
    return _BAD


def _or_none(normalize: Normalizer) -> Normalizer:
    def normalize_or_none(value: Any) -> Any:
        return None if value is None else normalize(value)

    return normalize_or_none


_INT32_MAX: Final = 2**31 - 1  # the widest integer column a backend stores (PostgreSQL)
_DURATION: Final = "seconds >= 0 (a number or a timedelta)"

_RULES: Final[dict[str, tuple[Normalizer, str]]] = {
    "queue": (_text, "a non-empty string (e.g. queue='emails')"),
    "priority": (
        _integer(-_INT32_MAX - 1, _INT32_MAX),
        "an integer from -2**31 to 2**31 - 1 (higher runs first; e.g. priority=9)",
    ),
    "retries": (_integer(0, _INT32_MAX), "an integer >= 0 (retries after the first attempt)"),
    "retry_backoff": (_seconds, _DURATION),
    "timeout": (
        _or_none(_positive_seconds),
        "seconds > 0 (a number or a timedelta), or None for no timeout",
    ),
    "expires": (
        _or_none(_expiry),
        f"a duration from now ({_DURATION}) or an aware datetime, or None (a number is always "
        "a duration: for epoch seconds t, pass datetime.fromtimestamp(t, timezone.utc))",
    ),
    "store_result": (_flag, "True or False"),
    "delay": (_or_none(_seconds), f"{_DURATION}, or None"),
    "eta": (
        _or_none(_instant),
        "an aware datetime (not a naive datetime: add tzinfo=timezone.utc) or epoch seconds, "
        "or None",
    ),
    "task_id": (_or_none(_text), "a non-empty string, or None for a generated id"),
    "dedup_key": (_or_none(_text), "a non-empty string, or None"),
    "dedup_ttl": (_or_none(_seconds), f"{_DURATION}, or None"),
    "parent_id": (_or_none(_text), "a task id (a non-empty string), or None"),
    "order_id": (_or_none(_text), "an order id (a non-empty string), or None"),
    "headers": (
        _headers,
        "a dict of str to str (header values travel as strings: convert them, e.g. str(42))",
    ),
    "idempotency_key": (_or_none(_text), "a non-empty string, or None for the task id"),
}
"""Option name -> (normalizer, rule). `connection` has none: the backend checks it."""


NO_OPTIONS: Final = TaskOptions()
"""The options of a call that sets none (identity-checked on the hot path)."""


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
    context_param: str | None
    signature: inspect.Signature
    call_signature: inspect.Signature
    """What a caller passes: `signature` without the `TaskContext` parameter."""
    check_arguments: ArgumentCheck
    """Raises `InvalidArguments` unless the caller's ``(args, kwargs)`` bind to
    `call_signature`; called on every send."""
    context_index: int | None = None
    """Position of the context parameter among positional parameters (None: pass by name)."""


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
) -> TaskDefinition:
    """Check the decorator's options and build the definition the worker runs.

    Raises:
        TaskRegistrationError: `fn` is not a function taskflow can run, or has no name.
        InvalidOption: an option (in `defaults`, or `retry_on` / `dont_retry_on`) breaks its
            rule.
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
    task_name = name or str(qualname).replace(".<locals>", "")
    _check_names(defaults, DEFAULT_OPTION_NAMES, task_name)
    options = TaskOptions.of(defaults, task=task_name)
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
        context_param=context_param,
        signature=signature,
        call_signature=call_signature,
        check_arguments=argument_check(task_name, call_signature, context_param),
        context_index=_positional_index(signature, context_param),
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
    total = len(params)
    # Python puts parameters without a default first, so positions < required are required.
    required = sum(1 for p in params if p.default is inspect.Parameter.empty)
    position = {p.name: index for index, p in enumerate(params)}

    def check(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        given_positionally = len(args)
        if not kwargs:
            if required <= given_positionally <= total:
                return
        elif given_positionally <= total:
            missing = max(required - given_positionally, 0)
            for key in kwargs:
                index = position.get(key)
                if index is None or index < given_positionally:
                    break  # unknown, or given twice: let bind() word it
                if index < required:
                    missing -= 1
            else:
                if missing == 0:
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

    __slots__ = ("_app", "_definition", "_options")

    def __init__(self, app: QueueTasks, definition: TaskDefinition, options: TaskOptions) -> None:
        self._app = app
        self._definition = definition
        self._options = options

    async def add_task(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Enqueue one run of the task with these options; returns its result handle.

        Raises:
            InvalidArguments: the arguments do not fit the task's signature (nothing is sent).
            EncodeError: an argument cannot be encoded with msgspec (the message names it).
        """
        return await self._app._enqueue_one(self._definition, args, kwargs, self._options)

    def add_task_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncResult[R]:
        """`add_task` for synchronous code (see `TaskFunc.add_task_sync`)."""
        return self._app._send_sync(self._definition, args, kwargs, self._options)

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
        return TaskCall(self._app, self._definition, self._options.merged(more))


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

        Opens the app on the running event loop if it is not open there.

        Raises:
            InvalidArguments: the arguments do not fit the task's signature (nothing is sent).
            EncodeError: an argument cannot be encoded with msgspec (the message names it).
            LifecycleError: the app is open on an event loop running in another thread.
        """
        return await self._app._enqueue_one(self.definition, args, kwargs, NO_OPTIONS)

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
        return self._app._send_sync(self.definition, args, kwargs, NO_OPTIONS)

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
        return TaskCall(self._app, self.definition, TaskOptions.of(options, task=self.name))

    def __repr__(self) -> str:
        return f"<TaskFunc {self.definition.name!r} ({self.definition.kind})>"
