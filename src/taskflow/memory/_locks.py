"""`LockTable`: the reader/writer locks of `MemoryCoordination`, in this process's memory.

One `_Lock` per name: its holders (owner -> mode, token, expiry), its FIFO queue of waiters
(an insertion-ordered dict) and its last fencing token, kept after the lock empties so the next
grant's token is still higher. Every call first prunes lapsed entries and grants what that
frees (`_Lock.settle`), then does its own step, following the rules written in
``taskflow/abc/_coordination.py``. What does not live here: leases and key-value records
(``_coordination.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .._message import (
    LockHold,
    LockHolder,
    LockMode,
    LockRequest,
    LockState,
    LockWaiter,
)

__all__ = ["LockTable"]

_SHARED = LockMode.SHARED
_EXCLUSIVE = LockMode.EXCLUSIVE


class _Lock:
    """One named lock: holders, waiters in queue order, and its last fencing token."""

    __slots__ = ("earliest", "holders", "token", "waiters")

    def __init__(self) -> None:
        self.token = 0
        self.holders: dict[str, LockHolder] = {}
        self.waiters: dict[str, LockWaiter] = {}
        #: At or before the earliest expiry of an entry: until then, nothing lapsed (so a
        #: settle need not look at a hundred shared holders on every request).
        self.earliest = float("inf")

    def _exclusive_held(self) -> bool:
        # An exclusive holder holds the lock alone.
        holders = self.holders
        return len(holders) == 1 and next(iter(holders.values())).mode is _EXCLUSIVE

    def _exclusive_waits(self) -> bool:
        return any(w.mode is _EXCLUSIVE for w in self.waiters.values())

    def _grant(self, owner: str, mode: LockMode, ttl_s: float, now: float) -> int:
        self.token += 1
        expires_at = now + ttl_s
        self.holders[owner] = LockHolder(
            owner=owner, mode=mode, token=self.token, expires_at=expires_at
        )
        self.earliest = min(self.earliest, expires_at)
        return self.token

    def settle(self, ttl_s: float, now: float) -> list[str]:
        """Drop lapsed holders and waiters, then grant the head of the queue what is free: the
        head EXCLUSIVE waiter alone, or the run of SHARED waiters. Returns the owners granted."""
        if self.earliest <= now:
            self.holders = {o: h for o, h in self.holders.items() if h.expires_at > now}
            self.waiters = {o: w for o, w in self.waiters.items() if w.expires_at > now}
            self.earliest = min(
                min((h.expires_at for h in self.holders.values()), default=float("inf")),
                min((w.expires_at for w in self.waiters.values()), default=float("inf")),
            )
        granted: list[str] = []
        if not self.waiters:
            return granted
        for owner, waiter in list(self.waiters.items()):
            if waiter.mode is _EXCLUSIVE and self.holders:
                break
            if waiter.mode is _SHARED and self._exclusive_held():
                break
            del self.waiters[owner]
            self._grant(owner, waiter.mode, ttl_s, now)
            granted.append(owner)
            if waiter.mode is _EXCLUSIVE:
                break
        return granted

    def request(self, request: LockRequest, ttl_s: float, now: float) -> int | None:
        """One request, on a settled lock (its queue's head cannot be granted)."""
        owner = request.owner
        held = self.holders.get(owner)
        if held is not None:  # already its own: renew, same token
            self.renew(LockHold(request.name, owner, held.token), ttl_s, now)
            return held.token
        queued = self.waiters.get(owner)
        if queued is not None:  # keeps its place, refreshes its expiry
            self.waiters[owner] = LockWaiter(
                owner=owner, mode=queued.mode, since=queued.since, expires_at=now + ttl_s
            )
            self.earliest = min(self.earliest, now + ttl_s)  # a shorter ttl moves it closer
            return None
        if self._grantable(request.mode):
            return self._grant(owner, request.mode, ttl_s, now)
        if request.wait:
            self.waiters[owner] = LockWaiter(
                owner=owner, mode=request.mode, since=now, expires_at=now + ttl_s
            )
            self.earliest = min(self.earliest, now + ttl_s)
        return None

    def _grantable(self, mode: LockMode) -> bool:
        if mode is _SHARED:
            return not self._exclusive_held() and not self._exclusive_waits()
        return not self.holders and not self.waiters

    def holds(self, hold: LockHold) -> bool:
        held = self.holders.get(hold.owner)
        return held is not None and held.token == hold.token

    def renew(self, hold: LockHold, ttl_s: float, now: float) -> bool:
        if not self.holds(hold):
            return False
        held = self.holders[hold.owner]
        self.holders[hold.owner] = LockHolder(
            owner=held.owner, mode=held.mode, token=held.token, expires_at=now + ttl_s
        )
        self.earliest = min(self.earliest, now + ttl_s)  # a shorter ttl moves it closer
        return True

    def state(self, name: str) -> LockState:
        return LockState(
            name=name, holders=list(self.holders.values()), waiters=list(self.waiters.values())
        )


class LockTable:
    """Every reader/writer lock of one `MemoryCoordination`, by name."""

    def __init__(self) -> None:
        self._locks: dict[str, _Lock] = {}

    def _settled(self, name: str, ttl_s: float, now: float, granted: list[str]) -> _Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = _Lock()
        granted += lock.settle(ttl_s, now)
        return lock

    def acquire(
        self, requests: Sequence[LockRequest], ttl_s: float, now: float
    ) -> list[int | None]:
        granted: list[str] = []  # grants of lapses noticed here: their owners' next call finds them
        return [self._settled(r.name, ttl_s, now, granted).request(r, ttl_s, now) for r in requests]

    def renew(self, holds: Sequence[LockHold], ttl_s: float, now: float) -> list[bool]:
        granted: list[str] = []
        return [self._settled(h.name, ttl_s, now, granted).renew(h, ttl_s, now) for h in holds]

    def release(self, holds: Sequence[LockHold], ttl_s: float, now: float) -> list[str]:
        granted: list[str] = []
        locks = self._all_settled([h.name for h in holds], ttl_s, now, granted)
        for hold in holds:
            lock = locks[hold.name]
            if lock.holds(hold):
                del lock.holders[hold.owner]
        return self._settle_again(locks, ttl_s, now, granted)

    def withdraw(self, requests: Sequence[LockRequest], ttl_s: float, now: float) -> list[str]:
        granted: list[str] = []
        locks = self._all_settled([r.name for r in requests], ttl_s, now, granted)
        for request in requests:
            lock = locks[request.name]
            # A request granted since it was queued is given back too: its owner gave up.
            if lock.waiters.pop(request.owner, None) is None:
                lock.holders.pop(request.owner, None)
        return self._settle_again(locks, ttl_s, now, granted)

    def _all_settled(
        self, names: list[str], ttl_s: float, now: float, granted: list[str]
    ) -> dict[str, _Lock]:
        """The locks of a release or withdrawal batch, each settled once (lapses granted)."""
        return {name: self._settled(name, ttl_s, now, granted) for name in dict.fromkeys(names)}

    @staticmethod
    def _settle_again(
        locks: dict[str, _Lock], ttl_s: float, now: float, granted: list[str]
    ) -> list[str]:
        """After every entry of the batch is gone, grant each lock's head once: the same grants
        as a settle per entry, and no owner granted and then withdrawn in one call."""
        for lock in locks.values():
            granted += lock.settle(ttl_s, now)
        return _unique(granted)

    def states(self, names: list[str] | None, now: float) -> list[LockState]:
        chosen = sorted(self._locks) if names is None else names
        out: list[LockState] = []
        for name in chosen:
            lock = self._locks.get(name)
            if lock is None:
                continue
            state = lock.state(name)
            holders = [h for h in state.holders if h.expires_at > now]
            waiters = [w for w in state.waiters if w.expires_at > now]
            if holders or waiters:
                out.append(LockState(name=name, holders=holders, waiters=waiters))
        return out


def _unique(owners: list[str]) -> list[str]:
    return list(dict.fromkeys(owners))
