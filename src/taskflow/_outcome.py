"""The outcome decision: how a run ended becomes the `Outcome` the worker stores, decided here
and nowhere else.

* a value: DONE (its encoded result kept for `result_ttl_s`), or FAILED if it cannot be
  encoded; WAIT after a fan-out (the task's outcome will be its join's);
* an error: RETRY (exponential backoff with jitter, or the delay of a `Retry`) while it is
  retryable (`Retry`; `retry_on` / `dont_retry_on`; never `InvalidArguments`,
  `NotResumable` or `UnencodableResult`) and attempts remain (`retries`), else FAILED (a dead
  letter);
* an interruption: CANCELLED (on request), a `TaskTimeout` or `LockLost` error (decided as
  above), RELEASE
  (shutdown: redelivered at once, its attempt refunded), or nothing (the lease is lost:
  someone else holds the task, and anything written would be refused);
* a message the worker cannot run: FAILED (undecodable), RELEASE for a while then FAILED (an
  unknown task name), EXPIRED (not started before its `expires`).

What does not live here: running the function (`_executor.py`), the run's state (`_run.py`),
and storing the outcomes (`_recorder.py`).
"""

from __future__ import annotations

import logging
import random
import traceback
from collections.abc import Iterable
from typing import Any, Final

from ._clock import Clock
from ._config import GlobalConfig
from ._exceptions import InvalidArguments, NotResumable, Retry, TaskTimeout, UnencodableResult
from ._message import SUPERSEDED, ErrorInfo, Outcome, OutcomeKind, TaskMessage, encode_value
from ._run import Run
from ._task import TaskDefinition

__all__ = [
    "OutcomeDecision",
    "encode_result",
    "error_info",
    "is_retryable",
    "release",
    "retry_delay",
    "runs_logger",
    "safe_str",
]

logger = logging.getLogger("taskflow.worker")
#: One line per task start (INFO, `_worker.py`) and per failed attempt (WARNING: retried;
#: ERROR: failed for good): the logger to route or silence on its own (docs/errors.md).
runs_logger = logging.getLogger("taskflow.worker.runs")

_NEVER_RETRIED: Final = (InvalidArguments, NotResumable, UnencodableResult)


class OutcomeDecision:
    """Turns how each run ended into its `Outcome` (see the module docstring).

    Args:
        config: Where `result_ttl_s`, `max_retry_backoff_s` and the unknown-task window come
            from.
        clock: The app's clock ("now" of every outcome).
    """

    __slots__ = ("_clock", "_config")

    def __init__(self, config: GlobalConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock

    def of_returned(
        self, run: Run, message: TaskMessage, definition: TaskDefinition, value: Any
    ) -> Outcome | None:
        """The function returned `value`: its outcome, unless the run was interrupted meanwhile
        (a cancel request that came too late to stop it does not undo a value)."""
        if run.interrupt_reason is not None and run.interrupt_reason != "cancel":
            return self.of_interruption(run, message, definition)
        if run.join_id is not None:
            return self.of_fan_out(run)
        return self.of_value(run, message, definition, value)

    def of_fan_out(self, run: Run) -> Outcome:
        """WAIT: the run fanned out (``ctx.fan_out``) and returned; the task ends as its join
        ends. What the function returned is not its result (the join's is), so it is ignored
        (``docs/flows.md``)."""
        return Outcome(run.task_id, run.token, OutcomeKind.WAIT)

    def of_raised(
        self, run: Run, message: TaskMessage, definition: TaskDefinition, exc: Exception
    ) -> Outcome | None:
        """The function raised `exc`: the interruption's outcome if the run was interrupted
        (the error is how the interruption showed), else the error's."""
        if run.interrupt_reason is not None:
            return self.of_interruption(run, message, definition)
        return self.of_error(run, message, definition, exc)

    def of_value(
        self, run: Run, message: TaskMessage, definition: TaskDefinition, value: Any
    ) -> Outcome:
        """DONE with the value (if the task stores its result); FAILED if it cannot be encoded."""
        result: bytes | None = None
        if message.store_result:
            try:
                result = encode_result(value)
            except UnencodableResult as exc:
                return self.of_error(run, message, definition, exc)
        return self._ended(run, OutcomeKind.DONE, result=result)

    def of_error(
        self,
        run: Run,
        message: TaskMessage,
        definition: TaskDefinition | None,
        exc: BaseException,
    ) -> Outcome:
        """RETRY if the error is retryable and attempts remain, else FAILED (dead letter). An
        error raised inside a chunk of ``ctx.chunks`` says which chunk."""
        info = error_info(exc)
        if run.chunk_at is not None:
            info = ErrorInfo(info.type, f"{info.message} [in {run.chunk_at}]", info.traceback)
        if is_retryable(definition, exc) and run.attempt <= message.retries:
            if isinstance(exc, Retry) and exc.delay is not None:
                delay = max(0.0, float(exc.delay))
            else:
                delay = retry_delay(
                    message.retry_backoff_s, run.attempt, self._config.max_retry_backoff_s
                )
            _log_error(logging.WARNING, "attempt %d failed, retrying", run, message, exc)
            retry_at = self._clock.time() + delay
            return Outcome(run.task_id, run.token, OutcomeKind.RETRY, error=info, retry_at=retry_at)
        _log_error(logging.ERROR, "failed for good on attempt %d", run, message, exc)
        return self._ended(run, OutcomeKind.FAILED, error=info)

    def of_interruption(
        self, run: Run, message: TaskMessage, definition: TaskDefinition | None
    ) -> Outcome | None:
        """The outcome of a run stopped for its `interrupt_reason`; None if its lease was lost
        (the run is dropped: someone else holds the task now)."""
        reason = run.interrupt_reason
        if reason == "lost":
            return None
        if reason == "cancel":
            return self._ended(run, OutcomeKind.CANCELLED, error=_cancelled(message))
        if reason == "lock" and run.lost_lock is not None:
            return self.of_error(run, message, definition, run.lost_lock)
        if reason == "timeout":
            exc = TaskTimeout(f"task ran longer than its timeout of {message.timeout_s} s")
            return self.of_error(run, message, definition, exc)
        return release(run)  # shutdown: redelivered at once, its attempt refunded

    def of_unknown_task(
        self, run: Run, message: TaskMessage, known: Iterable[str], *, shared: bool
    ) -> Outcome:
        """A task name this worker does not know: put back for a while if other processes may
        know it (`shared`, and the task is younger than `unknown_task_window_s`), else FAILED.
        """
        config = self._config
        now = self._clock.time()
        if shared and now - message.created_at < config.unknown_task_window_s:
            logger.warning(
                "task %s names %r, which this worker does not know; putting it back for %.0f s",
                run.task_id,
                message.name,
                config.unknown_task_retry_s,
            )
            retry_at = now + config.unknown_task_retry_s
            return Outcome(run.task_id, run.token, OutcomeKind.RELEASE, retry_at=retry_at)
        error = ErrorInfo(
            "UnknownTask",
            f"no task named {message.name!r} is registered (known: "
            f"{', '.join(sorted(known)) or 'none'}); register it with @app.task on the workers, "
            "or fix the name",
        )
        return self._ended(run, OutcomeKind.FAILED, error=error)

    def of_expiry(self, run: Run, message: TaskMessage) -> Outcome:
        """EXPIRED: the task was not started before its `expires_at` (it is not run)."""
        error = ErrorInfo(
            "TaskExpired",
            f"not started before it expired at {message.expires_at} "
            f"(now {self._clock.time()}); it was not run",
        )
        return self._ended(run, OutcomeKind.EXPIRED, error=error)

    def failure(self, run: Run, error_type: str, text: str) -> Outcome:
        """FAILED at once, not retried (an undecodable message, a bug in the worker)."""
        runs_logger.error("task %s: %s", run.task_id, text)
        return self._ended(run, OutcomeKind.FAILED, error=ErrorInfo(error_type, text))

    def _ended(
        self,
        run: Run,
        kind: OutcomeKind,
        *,
        result: bytes | None = None,
        error: ErrorInfo | None = None,
    ) -> Outcome:
        """A terminal outcome, its result kept for `result_ttl_s` from now."""
        expires_at = self._clock.time() + self._config.result_ttl_s
        return Outcome(
            run.task_id, run.token, kind, result=result, error=error, result_expires_at=expires_at
        )


def _cancelled(message: TaskMessage) -> ErrorInfo:
    """The error of a run cancelled by request. A running hedge copy is cancelled by the backend
    when the task it copies ends first (`Broker.complete`): it lost the race, so it says so as
    a copy cancelled before it ran does (a copy cancelled by hand says the same)."""
    if message.copy and message.outcome_to is not None:
        return ErrorInfo(SUPERSEDED, f"{message.name} ({message.outcome_to}) ended first")
    return ErrorInfo("Cancelled", "cancelled on request")


def release(run: Run) -> Outcome:
    """RELEASE: the task goes back for immediate redelivery, its attempt refunded."""
    return Outcome(run.task_id, run.token, OutcomeKind.RELEASE)


def _log_error(level: int, what: str, run: Run, message: TaskMessage, exc: BaseException) -> None:
    runs_logger.log(
        level,
        "task %s (%s) " + what + ": %s: %s",
        run.task_id,
        message.name,
        run.attempt,
        type(exc).__name__,
        safe_str(exc),
    )


def is_retryable(definition: TaskDefinition | None, exc: BaseException) -> bool:
    """Whether `exc` may be retried (attempts aside): always for `Retry`; never for
    `InvalidArguments`, `UnencodableResult` or a task this worker does not know; else by the
    task's `retry_on` / `dont_retry_on` (every exception when neither is set)."""
    if isinstance(exc, Retry):
        return True
    if isinstance(exc, _NEVER_RETRIED) or definition is None:
        return False
    if definition.dont_retry_on and isinstance(exc, definition.dont_retry_on):
        return False
    if definition.retry_on is not None:
        return isinstance(exc, definition.retry_on)
    return True


def retry_delay(backoff_s: float, attempt: int, cap_s: float) -> float:
    """Exponential backoff with jitter: about ``backoff * 2**(attempt-1)``, in [50%, 100%]."""
    base = min(cap_s, backoff_s * 2.0 ** max(0, attempt - 1))
    jitter: float = 0.5 + random.random() / 2
    return base * jitter


def error_info(exc: BaseException, *, with_traceback: bool = True) -> ErrorInfo:
    """The stored form of an exception: type name, message, formatted traceback."""
    tb = "".join(traceback.format_exception(exc)) if with_traceback else ""
    return ErrorInfo(type(exc).__name__, safe_str(exc), tb)


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder if the exception's own ``__str__`` fails (a task's odd
    exception must not take the worker's job path down with it)."""
    try:
        return str(exc)
    except Exception as err:
        return f"<str() of the {type(exc).__name__} failed: {type(err).__name__}>"


def encode_result(value: Any) -> bytes:
    """Encode a task's return value.

    Raises:
        UnencodableResult: msgspec cannot encode `value` (the message names its type).
    """
    try:
        return encode_value(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnencodableResult(
            f"the task returned a {type(value).__name__} that msgspec cannot encode ({exc}); "
            "return plain data (dict, list, str, numbers, datetime, msgspec.Struct, dataclass)"
        ) from None
