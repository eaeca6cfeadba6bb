"""Three asyncio helpers the rest of taskflow shares: `first_of`, `shielded` and
`BackgroundTasks`.

* `first_of` waits for the first of several awaitables and cancels the rest (the worker's idle
  and deadline waits, the drain's grace period, the Supervisor's leader and client waits).
* `shielded` runs cleanup work to its end even if the caller is cancelled meanwhile (the
  release of a lock or a leadership role when its block ends).
* `BackgroundTasks` starts tasks that run on their own and keeps a reference to each until it
  ends (asyncio keeps only weak ones, so an unreferenced task can be collected mid-way).

What does not live here: anything that knows about tasks, brokers or apps.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundTasks", "first_of", "shielded"]

T = TypeVar("T")


async def first_of(*awaitables: Awaitable[Any]) -> None:
    """Wait until the first of `awaitables` finishes; cancel the others.

    If the first to finish raised, that exception is raised here; the others' are dropped.
    Each awaitable runs as a task of its own, and the one that finishes wakes the caller from
    inside its own step (not through a done callback one loop turn later), so
    `anyio.wait_all_tasks_blocked()` - and with it `FakeClock.advance` - never sees the caller
    as idle while it is about to act.
    """
    loop = asyncio.get_running_loop()
    first: asyncio.Future[None] = loop.create_future()

    async def until_first(awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if not first.done():
                first.set_exception(exc)
        finally:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # no "never awaited" warning if cancelled before it began
            if not first.done():
                first.set_result(None)

    tasks = [loop.create_task(until_first(a)) for a in awaitables]
    try:
        await first
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        if first.done() and not first.cancelled():
            first.exception()  # retrieved: the caller may be leaving by cancellation


async def shielded(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to its end even if the caller is cancelled meanwhile; a cancellation that
    came is raised once it is done."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = cancelled or not task.done()
    task.result()
    if cancelled:
        raise asyncio.CancelledError


class BackgroundTasks:
    """Tasks started to run on their own, each referenced here until it ends.

    ```python
    background = BackgroundTasks()
    background.spawn(recheck(ids), name="taskflow-recheck")
    ...
    background.cancel_all()          # on close
    ```
    """

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Start `coro` as a task on the running loop and keep it until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_all(self) -> None:
        """Cancel every task still running (they end at their next await)."""
        for task in list(self._tasks):
            task.cancel()

    def forget(self) -> None:
        """Drop every task without touching it: their event loop has ended."""
        self._tasks = set()

    def __len__(self) -> int:
        return len(self._tasks)
