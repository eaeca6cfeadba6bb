"""The one schema of task options: what ``@app.task(...)`` and each call take, and each option's
one rule.

`TaskDefaults` (what ``@app.task(...)`` takes) and `CallOptions` (what one call takes: the
defaults plus when, which id, links and headers) are TypedDicts that every entry point takes as
``**options: Unpack[...]``, so mypy checks option names and types wherever they are given.
`TaskOptions` holds them checked, each by its one rule in `_RULES`, whichever entry point they
came through; `NOT_GIVEN` marks an option left to the task's (or the app's) default.

What does not live here: the task definition and its typed handles (`_task.py`), and building
the `TaskMessage` from the options (`_sending.py`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TypedDict, TypeVar

from ._exceptions import InvalidOption
from ._lock_types import DeclaredLock, Exclusive, Shared
from ._message import Hedge

__all__ = [
    "CALL_OPTION_NAMES",
    "DEFAULT_OPTION_NAMES",
    "NOT_GIVEN",
    "NO_OPTIONS",
    "CallOptions",
    "Seconds",
    "TaskDefaults",
    "TaskOptions",
    "When",
    "check_option_names",
    "duration_s",
    "given",
]


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
        locks: Reader/writer locks the run takes before it starts (`Shared` / `Exclusive`,
            each lock named once); while one is taken the task waits queued, holding no worker
            slot (default: none).
        hedge: Start a second copy of a run that takes longer than this says (a `Hedge`) on
            another worker; the first outcome wins (default None: never). See
            ``docs/hedging.md``.
    """

    queue: str
    priority: int
    retries: int
    retry_backoff: Seconds
    timeout: Seconds | None
    expires: Seconds | datetime | None
    store_result: bool
    locks: Sequence[DeclaredLock]
    hedge: Hedge | None


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
    locks: tuple[DeclaredLock, ...] | _NotGiven = NOT_GIVEN
    parent_id: str | _NotGiven | None = NOT_GIVEN
    order_id: str | _NotGiven | None = NOT_GIVEN
    headers: dict[str, str] | _NotGiven = NOT_GIVEN
    connection: Any = None
    idempotency_key: str | _NotGiven | None = NOT_GIVEN
    hedge: Hedge | _NotGiven | None = NOT_GIVEN

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
        check_option_names(options, CALL_OPTION_NAMES, task)
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


def check_option_names(options: Mapping[str, Any], known: frozenset[str], task: str | None) -> None:
    """Refuse an option name not in `known`: a per-call option given as a task default, or an
    unknown name (the message names the closest known one).

    Raises:
        InvalidOption: the first name of `options` not in `known`.
    """
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


def duration_s(value: object, *, positive: bool = False) -> float | None:
    """A duration (`Seconds`: a number of seconds or a `timedelta`) as finite float seconds
    >= 0 (> 0 if `positive`); None if `value` is not one. The one seconds converter: the
    options' rules and the Supervisor's arguments use it."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            return None
    else:
        return None
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        return None
    return seconds


def _seconds(value: Any) -> Any:
    seconds = duration_s(value)
    return _BAD if seconds is None else seconds


def _positive_seconds(value: Any) -> Any:
    seconds = duration_s(value, positive=True)
    return _BAD if seconds is None else seconds


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
    # No NUL: PostgreSQL's text cannot hold it, so no backend accepts it (the same everywhere).
    return value if isinstance(value, str) and value and "\x00" not in value else _BAD


def _flag(value: Any) -> Any:
    return value if isinstance(value, bool) else _BAD


def _headers(value: Any) -> Any:
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return dict(value)
    return _BAD


def _locks(value: Any) -> Any:
    """A sequence of `Shared` / `Exclusive` naming each lock once, as a tuple."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return _BAD
    locks = tuple(value)
    if not all(isinstance(lock, Shared | Exclusive) for lock in locks):
        return _BAD
    if len({lock.name for lock in locks}) != len(locks):
        return _BAD
    return locks


def _hedge(value: Any) -> Any:
    return value if isinstance(value, Hedge) else _BAD


def _or_none(normalize: Normalizer) -> Normalizer:
    def normalize_or_none(value: Any) -> Any:
        return None if value is None else normalize(value)

    return normalize_or_none


_INT32_MAX: Final = 2**31 - 1  # the widest integer column a backend stores (PostgreSQL)
_DURATION: Final = "seconds >= 0 (a number or a timedelta)"

_RULES: Final[dict[str, tuple[Normalizer, str]]] = {
    "queue": (_text, "a non-empty string without NUL (e.g. queue='emails')"),
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
    "task_id": (_or_none(_text), "a non-empty string without NUL, or None for a generated id"),
    "dedup_key": (_or_none(_text), "a non-empty string without NUL, or None"),
    "dedup_ttl": (_or_none(_seconds), f"{_DURATION}, or None"),
    "parent_id": (_or_none(_text), "a task id (a non-empty string without NUL), or None"),
    "order_id": (_or_none(_text), "an order id (a non-empty string without NUL), or None"),
    "headers": (
        _headers,
        "a dict of str to str (header values travel as strings: convert them, e.g. str(42))",
    ),
    "idempotency_key": (_or_none(_text), "a non-empty string without NUL, or None for the task id"),
    "locks": (
        _locks,
        "a list of taskflow.Shared(name) / taskflow.Exclusive(name) naming each lock once "
        "(e.g. locks=[Shared('dwh.sales')]; [] for none)",
    ),
}
"""Option name -> (normalizer, rule). `connection` has none: the backend checks it."""
_RULES["hedge"] = (
    _or_none(_hedge),
    "a taskflow.Hedge (e.g. hedge=Hedge(percentile=95) or hedge=Hedge(after=30.0)), or None",
)


NO_OPTIONS: Final = TaskOptions()
"""The options of a call that sets none (identity-checked on the hot path)."""
