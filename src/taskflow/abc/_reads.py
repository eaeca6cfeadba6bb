"""`ReadCoalescer`: the reads asked for in one event-loop turn, made as one batched read.

A thousand results awaited at once (``asyncio.gather``) each read their task: on a server that
is a thousand round trips, unless the reads of one loop turn go out together. Backends whose
reads cost a round trip put one of these in front of their batched read. What does not live
here: the read itself (the backend's), and which reads are worth coalescing (the backend
decides: the PostgreSQL backend its result waiters' reads, the Redis backend every read).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from .._aio import BackgroundTasks
from .._exceptions import LifecycleError

__all__ = ["ReadCoalescer"]

K = TypeVar("K")
V = TypeVar("V")

_Pending = list[tuple[list[K], "asyncio.Future[list[V]]"]]


class ReadCoalescer(Generic[K, V]):
    """Gathers the reads of one event-loop turn into one call of `read_batch`.

    The first read of a turn schedules the batch for the next turn; every read asked for until
    then joins it. `read_batch` gets all their keys in order (duplicates included) and returns
    one value per key; each reader gets its own slice. If it raises, every reader of the batch
    gets the error.

    Args:
        read_batch: Reads the given keys (in one round trip, or a few) and returns one value
            per key, in the same order.
    """

    def __init__(self, read_batch: Callable[[list[K]], Awaitable[Sequence[V]]]) -> None:
        self._read_batch = read_batch
        self._pending: _Pending[K, V] = []
        self._running = BackgroundTasks()

    async def read(self, key: K) -> V:
        """One value, read together with every other read of this loop turn."""
        return (await self.read_many((key,)))[0]

    async def read_many(self, keys: Sequence[K]) -> list[V]:
        """The values of `keys`, in order, read together with every other read of this turn.

        Raises:
            LifecycleError: the coalescer was closed (its storage closed) before the read ended.
            Exception: whatever `read_batch` raised.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[V]] = loop.create_future()
        pending = self._pending
        pending.append((list(keys), fut))
        if len(pending) == 1:
            loop.call_soon(self._start)
        return await fut

    def _start(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:  # forgotten or closed since it was scheduled
            return
        self._running.spawn(self._run(batch))

    async def _run(self, batch: _Pending[K, V]) -> None:
        keys = [key for keys, _ in batch for key in keys]
        try:
            values = await self._read_batch(keys)
        except asyncio.CancelledError:
            _fail(batch, _closed())
            raise
        except Exception as exc:
            _fail(batch, exc)
            return
        pos = 0
        for keys, fut in batch:
            if not fut.done():
                fut.set_result(list(values[pos : pos + len(keys)]))
            pos += len(keys)

    def close(self) -> None:
        """Fail the reads not started yet and cancel those in flight (their readers get a
        `LifecycleError`): the storage is closing."""
        batch, self._pending = self._pending, []
        _fail(batch, _closed())
        self._running.cancel_all()

    def forget(self) -> None:
        """Drop every read without touching it: their event loop has ended."""
        self._pending = []
        self._running.forget()


def _closed() -> LifecycleError:
    return LifecycleError("the storage was closed while a read was in flight")


def _fail(batch: _Pending[K, V], exc: BaseException) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)
