"""Where a queue's keys are and which queue a task id belongs to, on Redis.

Every key of an app's queue starts with ``<prefix>:<app>:{<queue>}:`` (the queue is the hash
tag, so a queue's keys share one slot of a Redis Cluster); `check_queue_name` refuses names that
cannot be a hash tag. Task ids end with a code of their queue (``taskflow._ids``), which routes
an id to its queue through the ``codes`` hash (code -> queue, read once per code per process);
ids chosen by users are routed through a small id -> queue index written at enqueue. `QueueRoutes`
keeps what this process learnt of both.

What does not live here: the keys' contents (``lua/``), the client (``_client.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from .._exceptions import ConfigError
from .._ids import CODE_LENGTH, is_task_id, queue_code

__all__ = ["QueueRoutes", "check_queue_name", "group_by_queue"]

_ID_CACHE_MAX: Final = 100_000


def check_queue_name(queue: str) -> None:
    """Raise `ConfigError` if `queue` cannot be a Redis hash tag (braces, or empty)."""
    if not queue or "{" in queue or "}" in queue:
        raise ConfigError(
            f"queue name {queue!r} cannot be used with the Redis backend: it becomes the hash "
            "tag of the queue's keys, so it must be non-empty and contain no '{' or '}'"
        )


def group_by_queue(queues: Sequence[str | None]) -> dict[str, list[int]]:
    """Indexes by queue, in first-seen order (None, an unknown id, is left out)."""
    groups: dict[str, list[int]] = {}
    for i, queue in enumerate(queues):
        if queue is not None:
            groups.setdefault(queue, []).append(i)
    return groups


async def nothing() -> None:
    """Nothing to read (stands in for a read that is not needed)."""
    return None


class QueueRoutes:
    """The queues registered on the server and the queue of each task id, as far as this
    process learnt them (they outlive a connection: the server keeps them).

    Args:
        prefix: ``<prefix>:<app>:``, what every key starts with.
        client: Gives the storage's current ``redis.asyncio`` client.
    """

    def __init__(self, prefix: str, client: Callable[[], Any]) -> None:
        self._prefix = prefix
        self._client = client
        self._known_queues: set[str] = set()
        #: Queue codes (the end of generated task ids) -> queue, as read from ``codes``.
        self._code_queues: dict[str, str] = {}
        #: Task ids chosen by users -> queue, as read from their ``ix:<id>`` index.
        self._id_queues: dict[str, str] = {}

    def knows(self, queues: Iterable[str]) -> bool:
        """True if every one of `queues` is registered already (see `register_queues`)."""
        return self._known_queues.issuperset(queues)

    async def register_queues(self, queues: Iterable[str]) -> None:
        """Remember queue names in the ``<prefix>:queues`` set (for `cleanup`) and their codes
        in the ``<prefix>:codes`` hash (code -> queue, first writer wins), once per process:
        one round trip for a queue this process has not sent to before.

        Raises:
            ConfigError: a queue's code is another queue's already (then their ids could not be
                told apart; with 40-bit codes about one pair in 10^12 collides).
        """
        new = [q for q in set(queues) if q not in self._known_queues]
        if not new:
            return
        codes = [queue_code(q) for q in new]
        async with self._client().pipeline(transaction=False) as pipe:
            pipe.sadd(f"{self._prefix}queues", *new)
            for code, queue in zip(codes, new, strict=True):
                pipe.hsetnx(f"{self._prefix}codes", code, queue)
            pipe.hmget(f"{self._prefix}codes", codes)
            owners = (await pipe.execute())[-1]
        for queue, code, owner in zip(new, codes, owners, strict=True):
            if owner.decode() != queue:
                raise ConfigError(
                    f"queue {queue!r} cannot be used on this Redis next to queue "
                    f"{owner.decode()!r}: both names hash to the code {code!r} that task ids "
                    "end with, so their ids could not be told apart; rename one of the queues"
                )
            self._code_queues[code] = queue
        self._known_queues.update(new)

    def remember_queue(self, task_id: str, queue: str) -> None:
        """Cache the queue of a task id chosen by a user (bounded)."""
        if len(self._id_queues) >= _ID_CACHE_MAX:
            self._id_queues.clear()
        self._id_queues[task_id] = queue

    async def index_ids(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """Write the id -> queue index of ids chosen by users (first writer wins).

        Returns per pair whether the id is (now) indexed to that queue; False means the id
        already belongs to a task of another queue.
        """
        keys = [f"{self._prefix}ix:{task_id}" for task_id, _ in pairs]
        results = await asyncio.gather(
            *(self._client().set(k, q, nx=True) for k, (_, q) in zip(keys, pairs, strict=True))
        )
        ok: list[bool] = []
        for key, (task_id, queue), written in zip(keys, pairs, results, strict=True):
            if not written:
                current = await self._client().get(key)
                if current is not None and current.decode() != queue:
                    ok.append(False)
                    continue
            self.remember_queue(task_id, queue)
            ok.append(True)
        return ok

    def local_queue(self, task_id: str) -> str | None:
        """The queue of a task id as far as this process knows it, without a read."""
        if is_task_id(task_id):
            return self._code_queues.get(task_id[-CODE_LENGTH:])
        return self._id_queues.get(task_id)

    async def resolve_queues(self, task_ids: Sequence[str]) -> list[str | None]:
        """The queue of each task id (None: no such task here): a generated id's by the code
        it ends with, a user's id through its index; each read once per process."""
        queues = [self.local_queue(task_id) for task_id in task_ids]
        missing = [i for i, queue in enumerate(queues) if queue is None]
        if missing:
            await self._look_up_queues(task_ids, missing, queues)
        return queues

    async def _look_up_queues(
        self, task_ids: Sequence[str], missing: list[int], queues: list[str | None]
    ) -> None:
        """Fill in `queues` at `missing`: codes from the ``codes`` hash (one read for all),
        ids chosen by users from their index, concurrently."""
        coded = [i for i in missing if is_task_id(task_ids[i])]
        indexed = [i for i in missing if not is_task_id(task_ids[i])]
        codes = list({task_ids[i][-CODE_LENGTH:] for i in coded})
        owners, *found = await asyncio.gather(
            self._client().hmget(f"{self._prefix}codes", codes) if codes else nothing(),
            *(self._client().get(f"{self._prefix}ix:{task_ids[i]}") for i in indexed),
        )
        for code, owner in zip(codes, owners or (), strict=True):
            if owner is not None:
                self._code_queues[code] = owner.decode()
        for i in coded:
            queues[i] = self._code_queues.get(task_ids[i][-CODE_LENGTH:])
        for i, raw in zip(indexed, found, strict=True):
            if raw is not None:
                queues[i] = raw.decode()
                self.remember_queue(task_ids[i], raw.decode())

    def forget_id(self, task_id: str) -> None:
        """Forget the queue of a task id chosen by a user (its task was deleted)."""
        self._id_queues.pop(task_id, None)
