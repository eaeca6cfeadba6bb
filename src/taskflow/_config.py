"""`GlobalConfig`: one typed settings object with documented defaults.

Each setting is resolved in this order: a value passed to `GlobalConfig(...)` in code, else the
environment variable ``TASKFLOW_<NAME>`` (upper case), else the default below (`heartbeat_s`
left unset is a third of `lease_s`). Every value is checked when the object is built, and a bad
one raises `ConfigError` naming the setting, where its value came from, and what it accepts. A
``TASKFLOW_*`` variable that is no setting but close to one (a typo) is reported with a warning
naming the setting meant. `app_config` is how `QueueTasks` takes its ``config=`` argument.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

from ._exceptions import ConfigError

__all__ = ["GlobalConfig", "app_config"]

_ENV_PREFIX: Final = "TASKFLOW_"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Final = _Unset()


@dataclasses.dataclass(frozen=True)
class _Setting:
    kind: type
    default: Any
    check: Callable[[Any], bool]
    rule: str
    doc: str


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


def _at_least_one(v: int) -> bool:
    return v >= 1


def _non_empty(v: str) -> bool:
    return bool(v)


_SETTINGS: Final[dict[str, _Setting]] = {
    "lease_s": _Setting(
        float,
        30.0,
        _positive,
        "a number of seconds > 0",
        "How long a claimed task stays invisible to other workers before it is re-delivered. "
        "Renewed every `heartbeat_s` while the task runs.",
    ),
    "heartbeat_s": _Setting(
        float,
        10.0,
        _positive,
        "a number of seconds > 0 and < lease_s",
        "How often a worker renews the leases of its running tasks (one batched call). Left "
        "unset, a third of lease_s (10 with the default lease).",
    ),
    "result_ttl_s": _Setting(
        float,
        86_400.0,
        _positive,
        "a number of seconds > 0",
        "How long a finished task's result is kept; after it, `result()` raises ResultExpired.",
    ),
    "default_retries": _Setting(
        int,
        0,
        _non_negative,
        "an integer >= 0",
        "Retries for tasks that do not set `retries` (0: a failure dead-letters at once).",
    ),
    "default_retry_backoff_s": _Setting(
        float,
        1.0,
        _non_negative,
        "a number of seconds >= 0",
        "Base of the exponential backoff: retry n waits about backoff * 2**(n-1), with jitter.",
    ),
    "max_retry_backoff_s": _Setting(
        float,
        600.0,
        _non_negative,
        "a number of seconds >= 0",
        "Upper bound of one retry's backoff.",
    ),
    "claim_batch": _Setting(
        int,
        100,
        _at_least_one,
        "an integer >= 1",
        "Most messages a worker claims in one backend call.",
    ),
    "prefetch_wait_s": _Setting(
        float,
        0.05,
        _non_negative,
        "a number of seconds >= 0",
        "How long a task claimed ahead of a free slot is expected to wait for one. A worker "
        "whose tasks are short claims up to one more batch while its slots are busy (as many "
        "as finish in this time at its measured pace), so the next claim's round trip overlaps "
        "running tasks; long tasks are never claimed ahead. 0: never claim ahead.",
    ),
    "concurrency": _Setting(
        int,
        10,
        _at_least_one,
        "an integer >= 1",
        "Default number of sub-worker slots (tasks run at once) per worker.",
    ),
    "thread_pool_size": _Setting(
        int,
        16,
        _at_least_one,
        "an integer >= 1",
        "Most plain (sync) task functions running in threads at once, per worker.",
    ),
    "shutdown_grace_s": _Setting(
        float,
        10.0,
        _non_negative,
        "a number of seconds >= 0",
        "On shutdown, how long running tasks may finish before they are cancelled and released.",
    ),
    "idle_poll_s": _Setting(
        float,
        1.0,
        _positive,
        "a number of seconds > 0",
        "Safety sweep of an idle worker; new work wakes it at once by push, this is a backstop.",
    ),
    "unknown_task_window_s": _Setting(
        float,
        300.0,
        _non_negative,
        "a number of seconds >= 0",
        "Shared backends: how long a task whose name no worker knows is put back (rolling "
        "deploys) before it is dead-lettered.",
    ),
    "unknown_task_retry_s": _Setting(
        float,
        5.0,
        _positive,
        "a number of seconds > 0",
        "Shared backends: delay before a task with an unknown name is offered again.",
    ),
    "events_maxlen": _Setting(
        int,
        100_000,
        _at_least_one,
        "an integer >= 1",
        "Approximate number of events kept per queue in the event stream.",
    ),
    "errors_maxlen": _Setting(
        int,
        10_000,
        _at_least_one,
        "an integer >= 1",
        "Approximate number of failed attempts kept per queue in the error log (app.errors).",
    ),
    "cleanup_interval_s": _Setting(
        float,
        300.0,
        _positive,
        "a number of seconds > 0",
        "How often each worker does its housekeeping: deletes records whose result expired "
        "more than result_ttl_s ago (Storage.cleanup), and expires artifacts past their time "
        "(docs/artifacts.md); idempotent, so many workers doing it is harmless.",
    ),
    "default_queue": _Setting(
        str,
        "default",
        _non_empty,
        "a non-empty string",
        "Queue of tasks that do not name one.",
    ),
}


def _parse(name: str, setting: _Setting, raw: str) -> Any:
    try:
        if setting.kind is int:
            return int(raw)
        if setting.kind is float:
            return float(raw)
        return raw
    except ValueError:
        raise ConfigError(
            f"GlobalConfig.{name}: environment variable TASKFLOW_{name.upper()}={raw!r} is not "
            f"{setting.rule}"
        ) from None


@dataclasses.dataclass(frozen=True, init=False)
class GlobalConfig:
    """Settings shared by the producer and the workers of one app.

    Each field falls back to the environment variable ``TASKFLOW_<FIELD>`` (for example
    ``TASKFLOW_LEASE_S=5``) and then to its default. Times are seconds (the ``_s`` suffix).

    Attributes:
        lease_s: Lease of a claimed task (default 30). Renewed while the task runs.
        heartbeat_s: Interval of the batched lease renewal (must be < lease_s; left unset, a
            third of lease_s: 10 with the default lease).
        result_ttl_s: How long results are kept (default 86400).
        default_retries: Retries of tasks that set none (default 0).
        default_retry_backoff_s: Base of the exponential retry backoff (default 1).
        max_retry_backoff_s: Cap of one retry's backoff (default 600).
        claim_batch: Most messages claimed per backend call (default 100).
        prefetch_wait_s: Expected wait of a task claimed ahead of a free slot (default 0.05;
            0 turns claiming ahead off).
        concurrency: Default sub-worker slots per worker (default 10).
        thread_pool_size: Most sync task functions in threads at once (default 16).
        shutdown_grace_s: Grace period for running tasks on shutdown (default 10).
        idle_poll_s: Backstop sweep interval of an idle worker (default 1).
        unknown_task_window_s: How long an unknown task name is retried on shared backends
            (default 300).
        unknown_task_retry_s: Delay between those retries (default 5).
        events_maxlen: Events kept per queue (default 100000).
        errors_maxlen: Failed attempts kept per queue in the error log (default 10000).
        cleanup_interval_s: How often a worker deletes long-expired records and expires
            artifacts (default 300).
        default_queue: Queue of tasks that name none (default ``"default"``).

    Raises:
        ConfigError: a value (given or from the environment) is out of range or of the wrong type.

    Warns:
        UserWarning: a ``TASKFLOW_*`` environment variable is not a setting but close to one
            (``TASKFLOW_LEASE=5``: did you mean ``TASKFLOW_LEASE_S``?); it is ignored.
    """

    _heartbeat_follows_lease: ClassVar[bool] = False
    # Set per instance when heartbeat_s was left unset, so replace(lease_s=...) keeps it a third.

    lease_s: float
    heartbeat_s: float
    result_ttl_s: float
    default_retries: int
    default_retry_backoff_s: float
    max_retry_backoff_s: float
    claim_batch: int
    prefetch_wait_s: float
    concurrency: int
    thread_pool_size: int
    shutdown_grace_s: float
    idle_poll_s: float
    unknown_task_window_s: float
    unknown_task_retry_s: float
    events_maxlen: int
    errors_maxlen: int
    cleanup_interval_s: float
    default_queue: str

    def __init__(
        self,
        *,
        lease_s: float | _Unset = _UNSET,
        heartbeat_s: float | _Unset = _UNSET,
        result_ttl_s: float | _Unset = _UNSET,
        default_retries: int | _Unset = _UNSET,
        default_retry_backoff_s: float | _Unset = _UNSET,
        max_retry_backoff_s: float | _Unset = _UNSET,
        claim_batch: int | _Unset = _UNSET,
        prefetch_wait_s: float | _Unset = _UNSET,
        concurrency: int | _Unset = _UNSET,
        thread_pool_size: int | _Unset = _UNSET,
        shutdown_grace_s: float | _Unset = _UNSET,
        idle_poll_s: float | _Unset = _UNSET,
        unknown_task_window_s: float | _Unset = _UNSET,
        unknown_task_retry_s: float | _Unset = _UNSET,
        events_maxlen: int | _Unset = _UNSET,
        errors_maxlen: int | _Unset = _UNSET,
        cleanup_interval_s: float | _Unset = _UNSET,
        default_queue: str | _Unset = _UNSET,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        given = {k: v for k, v in locals().items() if k in _SETTINGS}
        env = os.environ if environ is None else environ
        _warn_misspelt_variables(env)
        for name, setting in _SETTINGS.items():
            value = given[name]
            source = "argument"
            if isinstance(value, _Unset):
                raw = env.get(_env_name(name))
                if raw is None:
                    if name == "heartbeat_s":  # follows lease_s (set before it) unless set
                        object.__setattr__(self, "_heartbeat_follows_lease", True)
                        value, source = self.lease_s / 3, "a third of lease_s"
                    else:
                        value, source = setting.default, "default"
                else:
                    value, source = _parse(name, setting, raw), _env_name(name)
            value = _coerce(name, setting, value, source)
            object.__setattr__(self, name, value)
        if self.heartbeat_s >= self.lease_s:
            raise ConfigError(
                f"GlobalConfig.heartbeat_s={self.heartbeat_s} must be smaller than "
                f"lease_s={self.lease_s}, or leases lapse between renewals; leave heartbeat_s "
                "unset (a third of lease_s), or e.g. GlobalConfig(lease_s=30, heartbeat_s=10)"
            )

    def replace(self, **changes: Any) -> GlobalConfig:
        """Return a copy with some settings changed (validated like the constructor)."""
        unknown = set(changes) - set(_SETTINGS)
        if unknown:
            raise ConfigError(f"GlobalConfig has no setting(s) {sorted(unknown)}")
        current = {name: getattr(self, name) for name in _SETTINGS}
        if self._heartbeat_follows_lease and "heartbeat_s" not in changes:
            del current["heartbeat_s"]  # still a third of the (new) lease
        current.update(changes)
        return GlobalConfig(**current, environ={})

    @staticmethod
    def describe() -> dict[str, tuple[Any, str]]:
        """Return every setting's default and documentation, for docs and ``taskflow config``."""
        return {name: (s.default, s.doc) for name, s in _SETTINGS.items()}


def _env_name(setting: str) -> str:
    return f"{_ENV_PREFIX}{setting.upper()}"


_ENV_NAMES: Final = frozenset(_env_name(name) for name in _SETTINGS)


def _warn_misspelt_variables(env: Mapping[str, str]) -> None:
    """Warn about each ``TASKFLOW_*`` variable that is no setting but close to one.

    Only names close to a setting are reported: the CLI, the tests and the scripts read other
    ``TASKFLOW_*`` variables of their own (``TASKFLOW_LOG_LEVEL``, ``TASKFLOW_TEST_REDIS_URL``,
    ``TASKFLOW_VENV``, ...), which are far from every setting's name.
    """
    for key in env:
        if not key.startswith(_ENV_PREFIX) or key in _ENV_NAMES:
            continue
        meant = difflib.get_close_matches(key[len(_ENV_PREFIX) :].lower(), _SETTINGS, 1, 0.7)
        if meant:
            warnings.warn(
                f"environment variable {key} is not a taskflow setting and is ignored; did "
                f"you mean {_env_name(meant[0])}?",
                stacklevel=3,  # the caller of GlobalConfig(...)
            )


def app_config(config: object) -> GlobalConfig:
    """The settings of a `QueueTasks` given ``config=config``: `GlobalConfig()` for None.

    Raises:
        ConfigError: `config` is not a `GlobalConfig` (a dict of settings, say); the message
            shows the call to write instead.
    """
    if config is None:
        return GlobalConfig()
    if isinstance(config, GlobalConfig):
        return config
    if isinstance(config, Mapping):
        settings = ", ".join(f"{key}={value!r}" for key, value in config.items())
        raise ConfigError(
            f"config={config!r} is a {type(config).__name__}; QueueTasks takes a GlobalConfig: "
            f"write config=GlobalConfig({settings})"
        )
    raise ConfigError(
        f"config={config!r} is not a GlobalConfig; write config=GlobalConfig(...) with the "
        "settings to change (see GlobalConfig), or leave config out for the defaults"
    )


def _coerce(name: str, setting: _Setting, value: Any, source: str) -> Any:
    kind = setting.kind
    ok_type = (
        isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is float
        else isinstance(value, kind) and not isinstance(value, bool)
    )
    if not ok_type or not setting.check(value):
        raise ConfigError(f"GlobalConfig.{name}={value!r} (from {source}) is not {setting.rule}")
    return kind(value)
