"""Conformance of the reader/writer locks of `Coordination` (``broker.coordination``): the
rules written in ``taskflow/abc/_coordination.py``, one test (or a few) per rule, under a fake
``now``."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

from taskflow import InvalidOption
from taskflow.abc import (
    Broker,
    Coordination,
    LockHold,
    LockHolder,
    LockMode,
    LockRequest,
    LockState,
    LockWaiter,
)
from taskflow.testing import FakeClock

S = LockMode.SHARED
X = LockMode.EXCLUSIVE
TTL = 10.0


class Locks:
    """The calls of one test on one lock, spelled short, at the fake clock's time."""

    def __init__(self, coordination: Coordination, clock: FakeClock, name: str = "dwh.sales"):
        self.c = coordination
        self.clock = clock
        self.name = name

    async def take(
        self, owner: str, mode: LockMode = S, *, wait: bool = True, ttl: float = TTL
    ) -> int | None:
        [token] = await self.c.acquire_locks(
            [LockRequest(self.name, owner, mode, wait)], ttl_s=ttl, now=self.clock.time()
        )
        return token

    async def renew(self, owner: str, token: int | None, ttl: float = TTL) -> bool:
        assert token is not None
        [ok] = await self.c.renew_locks(
            [LockHold(self.name, owner, token)], ttl_s=ttl, now=self.clock.time()
        )
        return ok

    async def release(self, owner: str, token: int | None, ttl: float = TTL) -> list[str]:
        assert token is not None
        return await self.c.release_locks(
            [LockHold(self.name, owner, token)], ttl_s=ttl, now=self.clock.time()
        )

    async def withdraw(self, owner: str, mode: LockMode = S) -> list[str]:
        return await self.c.withdraw_lock_requests(
            [LockRequest(self.name, owner, mode)], ttl_s=TTL, now=self.clock.time()
        )

    async def state(self) -> tuple[list[tuple[str, LockMode]], list[tuple[str, LockMode]]]:
        """(holders sorted by owner, waiters in queue order), as (owner, mode) pairs."""
        states = await self.c.lock_states([self.name], now=self.clock.time())
        if not states:
            return [], []
        [state] = states
        holders = sorted((h.owner, h.mode) for h in state.holders)
        return holders, [(w.owner, w.mode) for w in state.waiters]


@pytest.fixture
def locks(backend: Broker, clock: FakeClock) -> Locks:
    return Locks(backend.coordination, clock)


# -- modes ----------------------------------------------------------------------------------


async def test_shared_holders_share_and_exclude_a_writer(locks: Locks) -> None:
    a = await locks.take("a")
    b = await locks.take("b")
    assert a is not None and b is not None and b > a
    assert await locks.take("w", X, wait=False) is None
    assert await locks.state() == ([("a", S), ("b", S)], [])  # wait=False: not queued


async def test_exclusive_holder_excludes_everyone(locks: Locks) -> None:
    w = await locks.take("w", X)
    assert w is not None
    assert await locks.take("r", S, wait=False) is None
    assert await locks.take("w2", X, wait=False) is None
    assert await locks.state() == ([("w", X)], [])


async def test_a_new_request_queues_behind_waiters(locks: Locks) -> None:
    r = await locks.take("r1")
    assert await locks.take("w", X) is None
    # An exclusive request waits for the holder; a second one queues behind the first.
    assert await locks.take("w2", X) is None
    assert await locks.state() == ([("r1", S)], [("w", X), ("w2", X)])
    assert r is not None


# -- fairness to writers --------------------------------------------------------------------


async def test_readers_queue_behind_a_waiting_writer(locks: Locks) -> None:
    r1 = await locks.take("r1")
    assert await locks.take("w", X) is None
    assert await locks.take("r2") is None  # would be compatible with r1, but a writer waits
    assert await locks.state() == ([("r1", S)], [("w", X), ("r2", S)])
    assert await locks.release("r1", r1) == ["w"]
    assert await locks.state() == ([("w", X)], [("r2", S)])


async def test_a_stream_of_readers_does_not_starve_a_writer(locks: Locks, clock: FakeClock) -> None:
    tokens = {"r0": await locks.take("r0")}
    assert await locks.take("w", X) is None
    # Readers keep arriving while the first ones finish: each new one queues behind the writer.
    for i in range(1, 20):
        assert await locks.take(f"r{i}") is None
        await clock.advance(0.1)
        assert await locks.take("w", X) is None  # refreshes its place, keeps it
    assert await locks.release("r0", tokens["r0"]) == ["w"]
    holders, waiters = await locks.state()
    assert holders == [("w", X)]
    assert [owner for owner, _ in waiters] == [f"r{i}" for i in range(1, 20)]


# -- re-requests ----------------------------------------------------------------------------


async def test_a_holder_requesting_again_keeps_its_token_and_renews(
    locks: Locks, backend: Broker, clock: FakeClock
) -> None:
    token = await locks.take("a", X)
    await clock.advance(8)
    assert await locks.take("a", X) == token
    await clock.advance(8)  # past the first expiry, within the renewed one
    [state] = await backend.coordination.lock_states(["dwh.sales"], now=clock.time())
    assert state.holders == [
        LockHolder(owner="a", mode=X, token=token or 0, expires_at=clock.time() - 8 + TTL)
    ]


async def test_a_queued_owner_keeps_its_place_and_refreshes_its_expiry(
    locks: Locks, backend: Broker, clock: FakeClock
) -> None:
    await locks.take("h", X, ttl=100)
    since = clock.time()
    assert await locks.take("w1", X) is None
    assert await locks.take("w2", X) is None
    await clock.advance(8)
    assert await locks.take("w1", X) is None
    await clock.advance(8)  # w1's first expiry passed; the refreshed one did not; w2 lapsed
    [state] = await backend.coordination.lock_states(["dwh.sales"], now=clock.time())
    assert state.waiters == [LockWaiter(owner="w1", mode=X, since=since, expires_at=since + 18)]


# -- fencing tokens -------------------------------------------------------------------------


async def test_tokens_increase_across_releases_and_regrants(locks: Locks) -> None:
    seen: list[int] = []
    for owner, mode in [("a", S), ("b", S), ("c", X), ("d", S), ("e", X)]:
        token = await locks.take(owner, mode)
        assert token is not None
        seen.append(token)
        await locks.release(owner, token)
    # Granted on release (not on request) too.
    w = await locks.take("w", X)
    assert await locks.take("x", X) is None
    assert await locks.release("w", w) == ["x"]
    x = await locks.take("x", X)
    assert x is not None and w is not None
    seen += [w, x]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


async def test_tokens_are_per_name(backend: Broker, clock: FakeClock) -> None:
    a = Locks(backend.coordination, clock, "a")
    b = Locks(backend.coordination, clock, "b")
    await a.release("o", await a.take("o"))
    ta = await a.take("o")
    tb = await b.take("o")
    assert ta is not None and tb is not None and tb < ta  # b's counter is its own


async def test_a_stale_hold_is_refused_by_renew_and_ignored_by_release(
    locks: Locks, clock: FakeClock
) -> None:
    old = await locks.take("a", X)
    await locks.release("a", old)
    new = await locks.take("a", X)
    assert old is not None and new is not None and new > old
    assert await locks.renew("a", old) is False
    assert await locks.release("a", old) == []
    assert await locks.state() == ([("a", X)], [])  # the live hold is untouched
    assert await locks.renew("a", new) is True
    assert await locks.renew("b", new) is False  # someone else's token


# -- lapses ---------------------------------------------------------------------------------


async def test_a_lapsed_holder_counts_for_nothing(locks: Locks, clock: FakeClock) -> None:
    a = await locks.take("a", X)
    await clock.advance(TTL)  # expires_at == now: lapsed
    b = await locks.take("b", X)
    assert a is not None and b is not None and b > a
    assert await locks.renew("a", a) is False
    assert await locks.release("a", a) == []
    assert await locks.state() == ([("b", X)], [])


async def test_renewal_keeps_a_hold_past_its_first_expiry(locks: Locks, clock: FakeClock) -> None:
    a = await locks.take("a", X)
    for _ in range(5):
        await clock.advance(TTL - 1)
        assert await locks.renew("a", a) is True
    assert await locks.take("b", X, wait=False) is None


async def test_a_lapsed_waiter_is_dropped_from_the_queue(locks: Locks, clock: FakeClock) -> None:
    h = await locks.take("h", X, ttl=100)
    assert await locks.take("w1", X, ttl=5) is None
    assert await locks.take("w2", X, ttl=50) is None
    await clock.advance(6)
    assert await locks.state() == ([("h", X)], [("w2", X)])
    assert await locks.release("h", h) == ["w2"]


async def test_a_lapse_noticed_by_a_call_grants_the_next_waiter(
    locks: Locks, clock: FakeClock
) -> None:
    await locks.take("h", X, ttl=5)
    assert await locks.take("w", X, ttl=100) is None
    await clock.advance(6)
    # The holder died: the waiter's own next request finds the lock granted to it.
    token = await locks.take("w", X)
    assert token is not None
    assert await locks.state() == ([("w", X)], [])


async def test_a_lapse_noticed_by_a_release_returns_the_granted(
    backend: Broker, clock: FakeClock
) -> None:
    one = Locks(backend.coordination, clock, "one")
    two = Locks(backend.coordination, clock, "two")
    await one.take("h", X, ttl=5)
    assert await one.take("w", X, ttl=100) is None
    t = await two.take("z", X, ttl=100)
    await clock.advance(6)
    granted = await backend.coordination.release_locks(
        [LockHold("one", "h", 1), LockHold("two", "z", t or 0)], ttl_s=TTL, now=clock.time()
    )
    assert granted == ["w"]


# -- grant on release -----------------------------------------------------------------------


async def test_release_grants_the_head_exclusive_waiter_alone(locks: Locks) -> None:
    r = await locks.take("r")
    assert await locks.take("w1", X) is None
    assert await locks.take("w2", X) is None
    assert await locks.take("r2") is None
    assert await locks.release("r", r) == ["w1"]
    assert await locks.state() == ([("w1", X)], [("w2", X), ("r2", S)])
    w1 = await locks.take("w1", X)  # its next request finds it its own
    assert w1 is not None
    assert await locks.release("w1", w1) == ["w2"]


async def test_release_grants_the_run_of_shared_waiters(locks: Locks) -> None:
    w = await locks.take("w", X)
    for owner in ("r1", "r2", "r3"):
        assert await locks.take(owner) is None
    assert await locks.take("w2", X) is None
    assert await locks.take("r4") is None
    assert sorted(await locks.release("w", w)) == ["r1", "r2", "r3"]
    assert await locks.state() == (
        [("r1", S), ("r2", S), ("r3", S)],
        [("w2", X), ("r4", S)],
    )


async def test_granted_waiters_hold_until_the_releases_ttl(
    locks: Locks, backend: Broker, clock: FakeClock
) -> None:
    w = await locks.take("w", X)
    assert await locks.take("r", S, ttl=1000) is None
    await clock.advance(1)
    assert await locks.release("w", w, ttl=7) == ["r"]
    [state] = await backend.coordination.lock_states(["dwh.sales"], now=clock.time())
    [holder] = state.holders
    assert holder.owner == "r" and holder.expires_at == clock.time() + 7
    assert holder.token > (w or 0)


async def test_release_of_one_of_several_readers_grants_nothing(locks: Locks) -> None:
    a = await locks.take("a")
    await locks.take("b")
    assert await locks.take("w", X) is None
    assert await locks.release("a", a) == []
    assert await locks.state() == ([("b", S)], [("w", X)])


# -- withdraw -------------------------------------------------------------------------------


async def test_withdraw_takes_a_request_out_of_the_queue(locks: Locks) -> None:
    h = await locks.take("h", X)
    assert await locks.take("w1", X) is None
    assert await locks.take("w2", X) is None
    assert await locks.withdraw("w1", X) == []
    assert await locks.state() == ([("h", X)], [("w2", X)])
    assert await locks.release("h", h) == ["w2"]


async def test_withdrawing_the_waiting_writer_lets_readers_behind_it_in(locks: Locks) -> None:
    await locks.take("r1")
    assert await locks.take("w", X) is None
    assert await locks.take("r2") is None
    assert await locks.take("r3") is None
    assert sorted(await locks.withdraw("w", X)) == ["r2", "r3"]
    assert await locks.state() == ([("r1", S), ("r2", S), ("r3", S)], [])


async def test_withdraw_gives_back_a_grant_its_owner_no_longer_wants(locks: Locks) -> None:
    h = await locks.take("h", X)
    assert await locks.take("w", X) is None
    assert await locks.take("n", X) is None
    assert await locks.release("h", h) == ["w"]  # w was granted, but gives up before it knew
    assert await locks.withdraw("w", X) == ["n"]
    assert await locks.state() == ([("n", X)], [])


async def test_withdraw_of_an_unknown_request_changes_nothing(locks: Locks) -> None:
    await locks.take("h", X)
    assert await locks.withdraw("nobody", X) == []
    assert await locks.state() == ([("h", X)], [])


# -- lock_states and batches ----------------------------------------------------------------


async def test_lock_states_lists_live_locks_sorted_by_name(
    backend: Broker, clock: FakeClock
) -> None:
    coordination = backend.coordination
    now = clock.time()
    tokens = await coordination.acquire_locks(
        [
            LockRequest("zeta", "a", X),
            LockRequest("alpha", "b", S),
            LockRequest("alpha", "c", S),
            LockRequest("zeta", "d", S),
            LockRequest("mid", "e", X),
        ],
        ttl_s=TTL,
        now=now,
    )
    assert tokens[0] is not None and tokens[3] is None
    await coordination.release_locks([LockHold("mid", "e", tokens[4] or 0)], ttl_s=TTL, now=now)
    states = await coordination.lock_states(now=now)
    assert [s.name for s in states] == ["alpha", "zeta"]  # "mid" has no holder nor waiter
    assert states[1] == LockState(
        name="zeta",
        holders=[LockHolder(owner="a", mode=X, token=tokens[0] or 0, expires_at=now + TTL)],
        waiters=[LockWaiter(owner="d", mode=S, since=now, expires_at=now + TTL)],
    )
    assert [s.name for s in await coordination.lock_states(["zeta", "nope", "alpha"], now=now)] == [
        "alpha",
        "zeta",
    ]
    await clock.advance(TTL)
    assert await coordination.lock_states(now=clock.time()) == []


async def test_batches_answer_in_request_order(backend: Broker, clock: FakeClock) -> None:
    coordination = backend.coordination
    now = clock.time()
    names = [f"lock-{i}" for i in range(12)]
    first = await coordination.acquire_locks(
        [LockRequest(n, "a", X) for n in names], ttl_s=TTL, now=now
    )
    assert all(t is not None for t in first)
    mixed = await coordination.acquire_locks(
        [LockRequest(n, "b", X, wait=i % 2 == 0) for i, n in enumerate(names)]
        + [LockRequest("free", "b", X)],
        ttl_s=TTL,
        now=now,
    )
    assert mixed[:-1] == [None] * 12 and mixed[-1] is not None
    holds = [LockHold(n, "a", t or 0) for n, t in zip(names, first, strict=True)]
    renewed = await coordination.renew_locks(
        [*holds[:3], LockHold("lock-3", "a", 999_999), *holds[4:]], ttl_s=TTL, now=now
    )
    assert renewed == [True] * 3 + [False] + [True] * 8
    granted = await coordination.release_locks(holds, ttl_s=TTL, now=now)
    assert granted == ["b"]  # owners granted, each once
    again = await coordination.acquire_locks(
        [LockRequest(n, "b", X) for n in names], ttl_s=TTL, now=now
    )
    # The even ones waited and were granted by the release; the odd ones were free.
    assert all(t is not None for t in again)


async def test_one_batch_can_touch_one_lock_twice(backend: Broker, clock: FakeClock) -> None:
    coordination = backend.coordination
    tokens = await coordination.acquire_locks(
        [LockRequest("x", "a", X), LockRequest("x", "b", S), LockRequest("x", "a", X)],
        ttl_s=TTL,
        now=clock.time(),
    )
    assert tokens[0] is not None and tokens[1] is None and tokens[2] == tokens[0]


async def test_names_are_checked(backend: Broker, clock: FakeClock) -> None:
    coordination = backend.coordination
    for bad in ["", "a\x00b", "x" * 201]:
        with pytest.raises(InvalidOption):
            await coordination.acquire_locks([LockRequest(bad, "a", X)], ttl_s=TTL, now=0.0)
    # Names that are awkward for keys are fine: braces, spaces, unicode, a maximal one.
    odd = ["}", "{x}", "a b", "таблица", "%7D", "x" * 200]
    tokens = await coordination.acquire_locks(
        [LockRequest(n, "a", X) for n in odd], ttl_s=TTL, now=clock.time()
    )
    assert all(t is not None for t in tokens)
    states = await coordination.lock_states(now=clock.time())
    assert [s.name for s in states] == sorted(odd)


# -- concurrency ----------------------------------------------------------------------------


async def test_concurrent_acquirers_never_see_two_writers(backend: Broker) -> None:
    """Many owners at once (on a server: over several connections), each taking the lock in
    turn, shared or exclusive, woken by the release that grants it: the lock's holders are
    never an exclusive one beside any other, as they see it and as the server says."""
    coordination = backend.coordination
    woken: dict[str, asyncio.Event] = {}
    inside: dict[LockMode, int] = {S: 0, X: 0}
    clock = time.time

    async def turn(owner: str, mode: LockMode) -> None:
        woken[owner] = asyncio.Event()
        request = LockRequest("hot", owner, mode)
        while (
            token := (await coordination.acquire_locks([request], ttl_s=60, now=clock()))[0]
        ) is None:
            await woken[owner].wait()
            woken[owner].clear()
        inside[mode] += 1
        assert inside[X] <= 1 and not (inside[X] and inside[S])
        [state] = await coordination.lock_states(["hot"], now=clock())
        modes = [h.mode for h in state.holders]
        assert modes.count(X) <= 1 and (X not in modes or len(modes) == 1), modes
        await asyncio.sleep(0)
        inside[mode] -= 1
        granted = await coordination.release_locks(
            [LockHold("hot", owner, token)], ttl_s=60, now=clock()
        )
        for other in granted:
            woken[other].set()

    async def worker(n: int) -> None:
        for round_ in range(6):
            await turn(f"w{n}.{round_}", X if (n + round_) % 3 == 0 else S)

    with anyio.fail_after(60):
        await asyncio.gather(*(worker(n) for n in range(12)))
    assert await coordination.lock_states(["hot"], now=clock()) == []
