"""Outcomes pushed before anyone waited for them, on the Redis backend.

Once a process waits for results on a queue (its inbox there is subscribed), the tasks it sends
there carry the inbox from the start (`RedisStorage.enqueue_inbox`): their outcome is pushed
to it however soon it comes, so a later ``result()`` needs no read. `EarlyOutcomes` keeps those
pushes until someone asks, and which tasks were created with an inbox registered (a task not
ended yet: its waiter waits for the push without a read). A resubscribed inbox may have lost
pushes, so what was registered before it counts no more (its epoch).

What does not live here: the listener and the waiters (``_storage.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from .._message import TaskOutcome, TaskStatus
from ._codec import outcome_from

__all__ = ["EarlyOutcomes"]

#: Most tasks remembered as registered at enqueue, and most early outcomes kept, per storage.
_REGISTERED_MAX: Final = 50_000

#: Most bytes of results and errors held in early outcomes, per storage.
_EARLY_BYTES_MAX: Final = 32 * 1024 * 1024


class EarlyOutcomes:
    """Outcomes pushed for tasks nobody waited for yet (the `OUTCOME_FIELDS` values), oldest
    dropped first beyond `_REGISTERED_MAX` entries or `_EARLY_BYTES_MAX` bytes (a dropped one
    costs its result() a read, nothing more); and the tasks created with an inbox registered."""

    def __init__(self) -> None:
        self._items: dict[str, list[bytes | None]] = {}
        self._bytes = 0
        #: Per inbox channel: how many times it was resubscribed (pushes may have been lost).
        self._epochs: dict[str, int] = {}
        #: Tasks created with their inbox registered: id -> (inbox, its epoch then).
        self._registered: dict[str, tuple[str, int]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items or self._registered)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._items

    def put(self, task_id: str, values: list[bytes | None]) -> None:
        """Keep the outcome pushed for `task_id` (its `OUTCOME_FIELDS` values)."""
        old = self._items.pop(task_id, None)
        if old is not None:
            self._bytes -= _size(old)
        self._items[task_id] = values
        self._bytes += _size(values)
        while self._items and (
            len(self._items) > _REGISTERED_MAX or self._bytes > _EARLY_BYTES_MAX
        ):
            self._bytes -= _size(self._items.pop(next(iter(self._items))))

    def pop(self, task_id: str) -> list[bytes | None] | None:
        """Take the outcome kept for `task_id`, if any."""
        values = self._items.pop(task_id, None)
        if values is not None:
            self._bytes -= _size(values)
        return values

    def registered(self, task_ids: Sequence[str], inbox: str) -> None:
        """Remember that `task_ids` were created with `inbox` registered."""
        mark = (inbox, self._epochs.get(inbox, 0))
        registered = self._registered
        for task_id in task_ids:
            registered[task_id] = mark
        while len(registered) > _REGISTERED_MAX:  # the oldest go first
            del registered[next(iter(registered))]

    def forget(self, task_id: str) -> None:
        """`task_id` ended but its outcome was not pushed (too large): a later result() must
        read it, not wait for a push."""
        self.pop(task_id)
        self._registered.pop(task_id, None)

    def resubscribed(self, inbox: str) -> None:
        """`inbox` was subscribed again: registrations made before cannot count on a push."""
        self._epochs[inbox] = self._epochs.get(inbox, 0) + 1

    def known_outcome(self, task_id: str) -> TaskOutcome | None:
        """Without a read: the outcome pushed for a task created with an inbox registered, or
        (once) a queued stand-in if it may still come (then the waiter waits for the push; a
        later read is a real one); None if a read is needed."""
        early = self.pop(task_id)
        if early is not None:
            self._registered.pop(task_id, None)
            return outcome_from(task_id, early, float("-inf"))
        mark = self._registered.pop(task_id, None)
        if mark is not None and self._epochs.get(mark[0], 0) == mark[1]:
            return TaskOutcome(id=task_id, status=TaskStatus.QUEUED)
        return None


def _size(values: list[bytes | None]) -> int:
    return sum(len(v) for v in values if v is not None)
