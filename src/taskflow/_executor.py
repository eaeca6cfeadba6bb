"""`TaskExecutor`: runs one task function (async, sync-in-thread, generator) and decides retries.

It knows nothing of brokers or leases: the worker hands it a definition, decoded arguments and a
`_Run` to report yields into, and turns what comes back (a value or an exception) into an
`Outcome` with `outcome_for_error`. Timeouts and cancellation are not handled here: the worker's
one deadline sweep interrupts the slot, which is cheaper than a cancel scope per task.
"""

from __future__ import annotations

import functools
import random
import traceback
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread

from ._exceptions import InvalidArguments, Retry, TaskTimeout, UnencodableResult
from ._message import ErrorInfo, Outcome, OutcomeKind, TaskMessage, encode_value

if TYPE_CHECKING:
    from ._task import TaskDefinition
    from ._worker import _Run

__all__ = [
    "TaskExecutor",
    "TaskTimeout",
    "error_info",
    "retry_delay",
    "safe_str",
]

_DONE: Final = object()


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


def retry_delay(backoff_s: float, attempt: int, cap_s: float) -> float:
    """Exponential backoff with jitter: about ``backoff * 2**(attempt-1)``, in [50%, 100%]."""
    base = min(cap_s, backoff_s * 2.0 ** max(0, attempt - 1))
    jitter: float = 0.5 + random.random() / 2
    return base * jitter


_NEVER_RETRIED: Final = (InvalidArguments, UnencodableResult)


def outcome_for_error(
    definition: TaskDefinition | None,
    message: TaskMessage,
    run: _Run,
    exc: BaseException,
    now: float,
    max_backoff_s: float,
    result_expires_at: float,
) -> Outcome:
    """RETRY if the error is retryable and attempts remain, else FAILED (dead letter)."""
    info = error_info(exc)
    retryable = _is_retryable(definition, exc)
    if retryable and run.attempt <= message.retries:
        if isinstance(exc, Retry) and exc.delay is not None:
            delay = max(0.0, float(exc.delay))
        else:
            delay = retry_delay(message.retry_backoff_s, run.attempt, max_backoff_s)
        return Outcome(run.task_id, run.token, OutcomeKind.RETRY, error=info, retry_at=now + delay)
    return Outcome(
        run.task_id, run.token, OutcomeKind.FAILED, error=info, result_expires_at=result_expires_at
    )


def _is_retryable(definition: TaskDefinition | None, exc: BaseException) -> bool:
    if isinstance(exc, Retry):
        return True
    if isinstance(exc, _NEVER_RETRIED) or definition is None:
        return False
    if definition.dont_retry_on and isinstance(exc, definition.dont_retry_on):
        return False
    if definition.retry_on is not None:
        return isinstance(exc, definition.retry_on)
    return True


class TaskExecutor:
    """Runs task functions by kind; sync code goes to a bounded thread pool, never the loop."""

    def __init__(self, thread_limiter: anyio.CapacityLimiter) -> None:
        self._limiter = thread_limiter

    async def execute(self, definition: TaskDefinition, args: Any, kwargs: Any, run: _Run) -> Any:
        """Run the function and return its value (for generators: the list of yields).

        Raises:
            InvalidArguments: the arguments do not fit the signature.
            Exception: whatever the task raised.
        """
        kind = definition.kind
        if kind == "async":
            return await self._call(definition, args, kwargs)
        if kind == "sync":
            _check_binding(definition, args, kwargs)
            call = functools.partial(definition.fn, *args, **kwargs)
            return await anyio.to_thread.run_sync(call, limiter=self._limiter)
        if kind == "async_generator":
            agen: AsyncIterator[Any] = _create(definition, args, kwargs)
            async for item in agen:
                run.add_yield(item)
                if run.interrupt_reason is not None:
                    break
            return run.yielded
        gen: Generator[Any, Any, Any] = _create(definition, args, kwargs)
        while True:
            item = await anyio.to_thread.run_sync(next, gen, _DONE, limiter=self._limiter)
            if item is _DONE:
                return run.yielded
            run.add_yield(item)
            if run.interrupt_reason is not None:
                gen.close()
                return run.yielded

    @staticmethod
    async def _call(definition: TaskDefinition, args: Any, kwargs: Any) -> Any:
        try:
            coro = definition.fn(*args, **kwargs)
        except TypeError as exc:
            # Creating a coroutine runs no user code: a TypeError here is a binding error.
            raise _invalid(definition, exc) from None
        return await coro


def _create(definition: TaskDefinition, args: Any, kwargs: Any) -> Any:
    try:
        return definition.fn(*args, **kwargs)
    except TypeError as exc:
        raise _invalid(definition, exc) from None


def _check_binding(definition: TaskDefinition, args: Any, kwargs: Any) -> None:
    try:
        definition.signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise _invalid(definition, exc) from None


def _invalid(definition: TaskDefinition, exc: TypeError) -> InvalidArguments:
    return InvalidArguments(
        f"arguments do not match {definition.name}{definition.signature}: {exc}"
    )


def encode_result(value: Any) -> bytes:
    """Encode a task's return value; raises UnencodableResult naming the type."""
    try:
        return encode_value(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnencodableResult(
            f"the task returned a {type(value).__name__} that msgspec cannot encode ({exc}); "
            "return plain data (dict, list, str, numbers, datetime, msgspec.Struct, dataclass)"
        ) from None
