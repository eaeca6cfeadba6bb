"""`RedisLocks`: the reader/writer locks of `RedisCoordination`, on Redis.

Each lock is six keys under one hash tag made of its name (``<prefix>lock:{<name>}:...``, with
``%`` and ``}`` percent-escaped so that any name is a hash tag), changed only by
``lua/lock.lua``, which holds the rules. A batch is grouped by lock name: one script call per
lock, all issued at once, so a batch is one round trip on a single node (the calls share the
pipelined lane) and one per slot, in parallel, on a cluster. The names ever requested are kept
in the set ``<prefix>locks``, for `lock_states` of every lock.

What does not live here: leases and key-value records (``_coordination.py``), the lock rules
(``lua/lock.lua``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, Final

from .._message import LockHold, LockHolder, LockMode, LockRequest, LockState, LockWaiter
from ._codec import time_arg
from ._storage import RedisStorage

__all__ = ["RedisLocks"]

_KEY_SUFFIXES: Final = ("m", "h", "he", "w", "we", "q")
_MODE_CODE: Final = {LockMode.SHARED: "S", LockMode.EXCLUSIVE: "X"}
_CODE_MODE: Final = {b"S": LockMode.SHARED, b"X": LockMode.EXCLUSIVE}
_INDEXED_MAX: Final = 100_000


def _hash_tag(name: str) -> str:
    """`name` made safe as a hash tag: no ``}`` (which would end it), reversibly."""
    return name.replace("%", "%25").replace("}", "%7D")


def _by_name(names: Sequence[str]) -> dict[str, list[int]]:
    """Indexes by lock name, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    return groups


async def _all(calls: Sequence[Awaitable[Any]]) -> list[Any]:
    # One call (the usual case): no gather, no extra task.
    return [await calls[0]] if len(calls) == 1 else list(await asyncio.gather(*calls))


class RedisLocks:
    """The reader/writer locks of one `RedisStorage`'s key space.

    Args:
        storage: The `RedisStorage` whose connections and key prefix the locks use.
    """

    def __init__(self, storage: RedisStorage) -> None:
        self._rs = storage
        # Names this process has added to the index (it only grows on the server).
        self._indexed: set[str] = set()

    @property
    def _index_key(self) -> str:
        return f"{self._rs.prefix}locks"

    def _keys(self, name: str) -> list[str]:
        base = f"{self._rs.prefix}lock:{{{_hash_tag(name)}}}:"
        return [base + suffix for suffix in _KEY_SUFFIXES]

    async def _run(self, name: str, op: str, exp: float, now: float, entries: list[str]) -> Any:
        args = [op, time_arg(now), time_arg(exp), *entries]
        return await self._rs.run_script("lock", self._keys(name), args)

    async def _index(self, names: list[str]) -> None:
        new = [name for name in names if name not in self._indexed]
        if not new:
            return
        await self._rs.client.sadd(self._index_key, *new)
        if len(self._indexed) > _INDEXED_MAX:
            self._indexed.clear()
        self._indexed.update(new)

    async def acquire(
        self, requests: Sequence[LockRequest], ttl_s: float, now: float
    ) -> list[int | None]:
        groups = _by_name([r.name for r in requests])
        calls: list[Awaitable[Any]] = [
            self._run(name, "acquire", now + ttl_s, now, _request_args(requests, idx))
            for name, idx in groups.items()
        ]
        # Indexed before the locks hold anything, so lock_states never misses a live lock.
        await self._index(list(groups))
        out: list[int | None] = [None] * len(requests)
        for idx, reply in zip(groups.values(), await _all(calls), strict=True):
            for i, token in zip(idx, reply, strict=True):
                out[i] = int(token) or None
        return out

    async def renew(self, holds: Sequence[LockHold], ttl_s: float, now: float) -> list[bool]:
        groups = _by_name([h.name for h in holds])
        calls = [
            self._run(name, "renew", now + ttl_s, now, _hold_args(holds, idx))
            for name, idx in groups.items()
        ]
        out = [False] * len(holds)
        for idx, reply in zip(groups.values(), await _all(calls), strict=True):
            for i, ok in zip(idx, reply, strict=True):
                out[i] = bool(ok)
        return out

    async def release(self, holds: Sequence[LockHold], ttl_s: float, now: float) -> list[str]:
        groups = _by_name([h.name for h in holds])
        calls = [
            self._run(name, "release", now + ttl_s, now, _hold_args(holds, idx))
            for name, idx in groups.items()
        ]
        return _owners(await _all(calls))

    async def withdraw(
        self, requests: Sequence[LockRequest], ttl_s: float, now: float
    ) -> list[str]:
        groups = _by_name([r.name for r in requests])
        calls = [
            self._run(name, "withdraw", now + ttl_s, now, [requests[i].owner for i in idx])
            for name, idx in groups.items()
        ]
        return _owners(await _all(calls))

    async def states(self, names: list[str] | None, now: float) -> list[LockState]:
        if names is None:
            names = sorted(m.decode() for m in await self._rs.client.smembers(self._index_key))
        if not names:
            return []
        replies = await _all([self._run(name, "state", now, now, []) for name in names])
        states = (_state(name, reply) for name, reply in zip(names, replies, strict=True))
        return [state for state in states if state.holders or state.waiters]


def _request_args(requests: Sequence[LockRequest], idx: list[int]) -> list[str]:
    args: list[str] = []
    for i in idx:
        r = requests[i]
        args += [r.owner, _MODE_CODE[r.mode], "1" if r.wait else "0"]
    return args


def _hold_args(holds: Sequence[LockHold], idx: list[int]) -> list[str]:
    args: list[str] = []
    for i in idx:
        args += [holds[i].owner, str(holds[i].token)]
    return args


def _owners(replies: list[list[bytes]]) -> list[str]:
    """The granted owners of every call, each once, in order."""
    return list(dict.fromkeys(owner.decode() for reply in replies for owner in reply))


def _state(name: str, reply: list[Any]) -> LockState:
    n_holders, rows = int(reply[0]), reply[1:]
    entries = [rows[i : i + 4] for i in range(0, len(rows), 4)]
    holders = [
        LockHolder(
            owner=owner.decode(), mode=_CODE_MODE[mode], token=int(token), expires_at=float(exp)
        )
        for owner, mode, token, exp in entries[:n_holders]
    ]
    waiters = [
        LockWaiter(
            owner=owner.decode(), mode=_CODE_MODE[mode], since=float(since), expires_at=float(exp)
        )
        for owner, mode, since, exp in entries[n_holders:]
    ]
    return LockState(name=name, holders=holders, waiters=waiters)
