"""`TaskExecutor`: runs one task function by its kind (async, sync-in-thread, generator).

It knows nothing of brokers, leases or outcomes: the worker hands it a definition, decoded
arguments and the `Run` to put yields into, and gets back a value or an exception, which
`_outcome.py` turns into an `Outcome`. Timeouts and cancellation are not handled here: the
worker's one deadline sweep interrupts the sub-worker, which is cheaper than a cancel scope per
task.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Generator
from typing import Any, Final

import anyio
import anyio.to_thread

from ._exceptions import InvalidArguments
from ._run import Run
from ._task import TaskDefinition

__all__ = ["TaskExecutor"]

_DONE: Final = object()


class TaskExecutor:
    """Runs task functions by kind; sync code goes to a bounded thread pool, never the loop."""

    def __init__(self, thread_limiter: anyio.CapacityLimiter) -> None:
        self._limiter = thread_limiter

    async def execute(self, definition: TaskDefinition, args: Any, kwargs: Any, run: Run) -> Any:
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
