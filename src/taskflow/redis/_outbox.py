"""`deliver_outboxes`: a flow task's end told to its children of other queues.

A script that ends a task tells its children of the same queue in the same atomic call; a
child of another queue (another hash slot on a cluster) is out of the script's reach, so the
call records the delivery in its own queue's outbox ``{Q}:outbox`` instead (``to_outbox`` in
``lua/common.lua``): the intent is stored with the end, so nothing is lost. This module
delivers outboxes: one idempotent ``arrive`` script call per target queue (a set of arrived
parents, not a counter: a delivery made twice counts once), then it removes exactly the
entries it delivered. The broker delivers right after each call that reported outbox entries,
and every worker's housekeeping (`RedisStorage.cleanup`) delivers what a crash in between left.

What does not live here: the scripts (``lua/arrive.lua``, ``lua/common.lua``), the calls that
end tasks (``_broker.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Final, Protocol

from ._codec import pack, split_outbox, time_arg, unpack

__all__ = ["OutboxServer", "deliver_outboxes"]


class OutboxServer(Protocol):
    """What delivering needs of a `RedisStorage` (which calls this module, so it is not
    imported here)."""

    @property
    def client(self) -> Any: ...

    def qkey(self, queue: str, suffix: str) -> str: ...

    async def run_queue_script(self, name: str, queue: str, now: float, args: list[Any]) -> Any: ...


#: Outbox entries read, delivered and removed per round.
_CHUNK: Final = 500


async def deliver_outboxes(
    storage: OutboxServer, queues: Iterable[str], now: float, result_expires_at: float
) -> int:
    """Deliver every entry of the outboxes of `queues`, and of the outboxes those deliveries
    fill in turn (a cascade across queues). Children ended by a delivery (a parent without a
    value) get `result_expires_at`. Returns how many entries were delivered."""
    todo = dict.fromkeys(queues)
    delivered = 0
    while todo:
        queue = next(iter(todo))
        del todo[queue]
        count, more = await _deliver_one(storage, queue, now, result_expires_at)
        delivered += count
        todo.update(dict.fromkeys(more))
    return delivered


async def _deliver_one(
    storage: OutboxServer, queue: str, now: float, result_expires_at: float
) -> tuple[int, set[str]]:
    """Deliver `queue`'s outbox: how many entries, and the queues whose outboxes got entries."""
    key = storage.qkey(queue, "outbox")
    client = storage.client
    delivered = 0
    filled: set[str] = set()
    while True:
        members: list[bytes] = await client.zrange(key, 0, _CHUNK - 1)
        if not members:
            return delivered, filled
        filled |= await _arrive(storage, _by_target(members), now, result_expires_at)
        await client.zrem(key, *members)
        delivered += len(members)
        if len(members) < _CHUNK:
            return delivered, filled


def _by_target(members: list[bytes]) -> dict[str, list[bytes]]:
    """Outbox entries (``{seq, child, queue, parent, ok, text}``) as the ``arrive`` script's
    flat fields, by the child's queue."""
    groups: dict[str, list[bytes]] = {}
    for member in members:
        _, child, queue, parent, ok, text = unpack(member)
        groups.setdefault(queue.decode(), []).extend((child, parent, ok, text))
    return groups


async def _arrive(
    storage: OutboxServer, groups: dict[str, list[bytes]], now: float, result_expires_at: float
) -> set[str]:
    """One ``arrive`` call per target queue; the queues whose own outboxes got entries."""
    targets = list(groups)
    replies = await asyncio.gather(
        *(
            storage.run_queue_script(
                "arrive", q, now, [time_arg(result_expires_at), pack(groups[q])]
            )
            for q in targets
        )
    )
    return {q for q, reply in zip(targets, replies, strict=True) if split_outbox(reply)[1]}
