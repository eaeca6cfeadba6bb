"""`ResultWaiters`: who in this process waits for which task's end, woken by the backend's push.

Every `Storage` has one (``storage.waiters``); `Storage.wait` waits through it, and the backend
wakes it whenever it learns that a task ended. What does not live here: how a backend hears of
an end (its push channel) and how it reads a task (`Storage._get_outcomes`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .._exceptions import TaskNotFound
from .._message import TaskOutcome

__all__ = ["ResultWaiters"]


class ResultWaiters:
    """The registry of result waiters of one storage: register before read, wake by push.

    `wait` registers the waiter *before* it reads the task's stored state, so an end written
    between the read and the sleep still wakes it; nothing is ever polled. A backend calls
    `wake` for every task it learns has ended: from its own terminal writes (a complete, a
    cancel, a purge, a lapsed lease dead-lettered) and from its push channel (pub/sub,
    LISTEN/NOTIFY). It wakes with the terminal `TaskOutcome` when the push carries one (the
    waiter returns it without a read), or with None (the waiter reads the task again).

    Bound to the event loop it is used on: `close` cancels the waits of a storage closing,
    `forget` drops those of a loop that ended without touching them.
    """

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: dict[str, list[asyncio.Future[TaskOutcome | None]]] = {}

    def __contains__(self, task_id: object) -> bool:
        """Whether someone in this process waits for `task_id` (before building an outcome to
        wake it with, check this: most ends have no waiter)."""
        return task_id in self._futures

    def __len__(self) -> int:
        """How many tasks are waited for."""
        return len(self._futures)

    def task_ids(self) -> list[str]:
        """The tasks waited for (to read them again after the push channel was down)."""
        return list(self._futures)

    async def wait(
        self,
        task_id: str,
        read: Callable[[], Awaitable[TaskOutcome | None]],
        *,
        timeout: float | None,
    ) -> TaskOutcome:
        """Wait until `task_id` is terminal and return how it ended.

        `read` reads the task's stored outcome (None: no such task). It is called after the
        waiter is registered, and again after each wake-up without an outcome.

        Raises:
            TaskNotFound: `read` found no such task.
            TimeoutError: (builtin) not terminal within `timeout` seconds (None: no limit).
        """
        loop = asyncio.get_running_loop()
        futures = self._futures.setdefault(task_id, [])
        fut: asyncio.Future[TaskOutcome | None] | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    fut = loop.create_future()
                    futures.append(fut)
                    got = await read()
                    if got is None:
                        raise TaskNotFound(task_id)
                    if got.status.terminal:
                        return got
                    pushed = await fut
                    if pushed is not None and pushed.status.terminal:
                        return pushed
                    futures.remove(fut)  # a bare wake-up: read again, keep waiting
        finally:
            if fut is not None and fut in futures:
                futures.remove(fut)
            if not futures and self._futures.get(task_id) is futures:
                del self._futures[task_id]

    def wake(self, task_id: str, outcome: TaskOutcome | None = None) -> None:
        """Wake the waiters of `task_id`, which ended: with its terminal `outcome` if at hand,
        else with None (they read it). A no-op if nobody waits for it."""
        futures = self._futures.get(task_id)
        if futures:
            for fut in futures:
                if not fut.done():
                    fut.set_result(outcome)

    def close(self) -> None:
        """Cancel every pending wait (the storage is closing) and forget them."""
        for futures in self._futures.values():
            for fut in futures:
                if not fut.done():
                    fut.cancel()
        self._futures = {}

    def forget(self) -> None:
        """Drop every wait without touching it: their event loop has ended (cancelling a future
        of that loop would schedule its callbacks there)."""
        self._futures = {}
