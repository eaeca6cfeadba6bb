"""`Wakeups`: what this process heard of each queue, and who that wakes.

The listener's ``w:`` and ``e:`` notifications, and the changes this process makes itself, are
counted per queue (`Mark`), so a reader can tell whether anything was announced since it last
looked; the idle workers watching a queue (`Broker.watch_work`) are called for its work; and
every sleeper of `wait_changed` (an event follower, a test) is woken. After the listener was
down, every watcher is called once and the gap is counted, since what it carried meanwhile is
lost.

What does not live here: the listening connection (``_listener.py``) and the result waiters
(`ResultWaiters`, woken by the storage).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import NamedTuple

__all__ = ["Mark", "Wakeups"]


class Mark(NamedTuple):
    """How much of one queue this process has heard: two equal marks mean nothing was
    announced in between (and the listener was not down)."""

    gaps: int
    heard: int


class _Watcher(NamedTuple):
    queues: list[str]
    callback: Callable[[], None]


class Wakeups:
    """Per-queue counters of work and events heard, listener gaps, work watchers, sleepers."""

    def __init__(self) -> None:
        #: How many times the listener was down (notifications may have been missed).
        self.gaps = 0
        self._work_heard: dict[str, int] = {}
        self._events_heard: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Start afresh what belongs to one open on one event loop: the sleepers' event and the
        work watchers (the counters go on: a mark taken before stays comparable)."""
        self._changed = asyncio.Event()
        self._closed = False
        self._watchers: dict[str, _Watcher] = {}
        self._callbacks: dict[str, list[Callable[[], None]]] = {}

    def close(self) -> None:
        """Wake every sleeper for good (the storage closed)."""
        self._closed = True
        self.wake()

    # -- marks ----------------------------------------------------------------------------------

    def work_mark(self, queue: str) -> Mark:
        """How much work of `queue` was announced so far."""
        return Mark(self.gaps, self._work_heard.get(queue, 0))

    def event_mark(self, queue: str) -> Mark:
        """How many event notifications of `queue` were heard so far."""
        return Mark(self.gaps, self._events_heard.get(queue, 0))

    # -- what wakes -----------------------------------------------------------------------------

    def announce(self, queues: Sequence[str], *, work: bool) -> None:
        """`queues` have new events (and new work if `work`: their work watchers are called);
        wake the sleepers."""
        for queue in queues:
            self._events_heard[queue] = self._events_heard.get(queue, 0) + 1
            if work:
                self._work_heard[queue] = self._work_heard.get(queue, 0) + 1
                for callback in self._callbacks.get(queue, ()):
                    callback()
        self.wake()

    def after_gap(self) -> None:
        """The listener is back after being down: count the gap, wake every sleeper and call
        every work watcher once."""
        self.gaps += 1
        self.wake()
        for watcher in list(self._watchers.values()):
            watcher.callback()

    def wake(self) -> None:
        """Wake every sleeper of `wait_changed` (they check their condition again)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self, ready: Callable[[], bool]) -> None:
        """Sleep until `ready()` holds, checked again after each wake-up, or until `close`."""
        while not ready():
            await self._changed.wait()
            if self._closed:
                return

    # -- work watchers --------------------------------------------------------------------------

    def watch(self, worker_id: str, queues: Sequence[str], callback: Callable[[], None]) -> None:
        """Call `callback` for every announcement of work in `queues` (a ``w:`` notification, a
        local enqueue there) and once after each listener gap, until `unwatch`."""
        self.unwatch(worker_id)
        self._watchers[worker_id] = _Watcher(list(queues), callback)
        for queue in queues:
            self._callbacks.setdefault(queue, []).append(callback)

    def unwatch(self, worker_id: str) -> None:
        """End `watch` for `worker_id`."""
        watcher = self._watchers.pop(worker_id, None)
        if watcher is None:
            return
        for queue in watcher.queues:
            callbacks = self._callbacks.get(queue, [])
            if watcher.callback in callbacks:
                callbacks.remove(watcher.callback)
