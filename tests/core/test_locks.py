"""In-code locks: ``app.lock(...)`` (`AppLock`) on the memory backend, time under a `FakeClock`.

The lock rules themselves are the conformance suite's (tests/conformance/test_locks.py); here:
waiting and being woken, renewing while held, releasing on every way out, withdrawing when
cancelled while waiting, and `LockLost`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest

from taskflow import AppLock, GlobalConfig, InvalidOption, LifecycleError, LockLost, QueueTasks
from taskflow.abc import LockHold, LockMode, LockRequest
from taskflow.testing import FakeClock

S = LockMode.SHARED
X = LockMode.EXCLUSIVE


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def app(clock: FakeClock) -> AsyncIterator[QueueTasks]:
    app = QueueTasks(name="t", clock=clock, config=GlobalConfig(lease_s=30))
    async with app:
        yield app


async def holders(app: QueueTasks, name: str = "r") -> list[tuple[str, LockMode]]:
    states = await app.coordination.lock_states([name], now=app.clock.time())
    return sorted((h.owner, h.mode) for s in states for h in s.holders)


async def waiters(app: QueueTasks, name: str = "r") -> list[tuple[str, LockMode]]:
    states = await app.coordination.lock_states([name], now=app.clock.time())
    return [(w.owner, w.mode) for s in states for w in s.waiters]


class Holder:
    """A task that takes `lock`, says so, and holds it until told to leave."""

    def __init__(self, lock: AppLock) -> None:
        self.lock = lock
        self.entered = asyncio.Event()
        self.leave = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> int:
        async with self.lock as held:
            self.entered.set()
            await self.leave.wait()
            return held.token

    async def done(self) -> int:
        self.leave.set()
        return await self.task


# -- taking turns ---------------------------------------------------------------------------


async def test_an_exclusive_holder_is_alone_and_the_next_is_woken_at_once(app: QueueTasks) -> None:
    first = Holder(app.lock("r"))
    await first.entered.wait()
    second = Holder(app.lock("r"))
    await anyio.wait_all_tasks_blocked()
    assert not second.entered.is_set()
    assert await waiters(app) == [(second.lock.owner, X)]
    # The release in this process wakes the waiter it granted: no clock advance needed.
    token_1 = await first.done()
    await second.entered.wait()
    assert await holders(app) == [(second.lock.owner, X)]
    assert await second.done() > token_1
    assert await holders(app) == []


async def test_readers_share_and_a_waiting_writer_holds_new_readers_back(app: QueueTasks) -> None:
    r1, r2 = Holder(app.lock("r", shared=True)), Holder(app.lock("r", shared=True))
    await r1.entered.wait()
    await r2.entered.wait()
    writer = Holder(app.lock("r"))
    await anyio.wait_all_tasks_blocked()
    late_reader = Holder(app.lock("r", shared=True))
    await anyio.wait_all_tasks_blocked()
    assert not writer.entered.is_set() and not late_reader.entered.is_set()
    assert await waiters(app) == [(writer.lock.owner, X), (late_reader.lock.owner, S)]
    await r1.done()
    await r2.done()
    await writer.entered.wait()
    assert not late_reader.entered.is_set()
    await writer.done()
    await late_reader.entered.wait()
    await late_reader.done()


async def test_a_grant_made_elsewhere_is_noticed_by_asking_again(
    app: QueueTasks, clock: FakeClock
) -> None:
    coordination = app.coordination
    # Another process holds the lock: its release wakes nobody here.
    [token] = await coordination.acquire_locks(
        [LockRequest("r", "elsewhere", X)], ttl_s=30, now=clock.time()
    )
    waiter = Holder(app.lock("r"))
    await anyio.wait_all_tasks_blocked()
    assert token is not None and clock.sleepers == 1  # waiting on its backoff, not spinning
    granted = await coordination.release_locks(
        [LockHold("r", "elsewhere", token)], ttl_s=30, now=clock.time()
    )
    assert granted == [waiter.lock.owner]
    await anyio.wait_all_tasks_blocked()
    assert not waiter.entered.is_set()
    await clock.advance(0.01)  # the first backoff
    await waiter.entered.wait()
    await waiter.done()


async def test_the_backoff_doubles_up_to_its_cap_and_keeps_the_request_alive(
    app: QueueTasks, clock: FakeClock
) -> None:
    coordination = app.coordination
    await coordination.acquire_locks(
        [LockRequest("r", "elsewhere", X)], ttl_s=1000, now=clock.time()
    )
    waiter = Holder(app.lock("r", ttl=3))  # cap: a third of the ttl, 1 s
    for step in (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0, 1.0, 1.0):
        await anyio.wait_all_tasks_blocked()
        await clock.advance(step)
    await anyio.wait_all_tasks_blocked()
    # Still queued after 6 s with a 3 s ttl: each request refreshed its place.
    assert await waiters(app) == [(waiter.lock.owner, X)]
    waiter.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter.task


# -- holding --------------------------------------------------------------------------------


async def test_the_lock_is_renewed_while_held(app: QueueTasks, clock: FakeClock) -> None:
    holder = Holder(app.lock("r", ttl=9))
    await holder.entered.wait()
    for _ in range(10):  # 30 s, more than three leases: renewed every 3 s
        await clock.advance(3)
    assert await holders(app) == [(holder.lock.owner, X)]
    assert holder.lock.held
    await holder.done()
    assert not holder.lock.held


async def test_the_default_ttl_is_the_lease_renewed_every_heartbeat(
    app: QueueTasks, clock: FakeClock
) -> None:
    holder = Holder(app.lock("r"))
    await holder.entered.wait()
    [state] = await app.coordination.lock_states(["r"], now=clock.time())
    assert state.holders[0].expires_at == clock.time() + 30
    await clock.advance(10)  # heartbeat_s: a third of lease_s
    [state] = await app.coordination.lock_states(["r"], now=clock.time())
    assert state.holders[0].expires_at == clock.time() + 30
    await holder.done()


async def test_a_lost_lock_cancels_the_block_and_raises_lock_lost(
    app: QueueTasks, clock: FakeClock
) -> None:
    body_cancelled = asyncio.Event()
    entered = asyncio.Event()

    async def hold() -> None:
        async with app.lock("r", ttl=9) as lock:
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                body_cancelled.set()
                raise
        del lock

    task = asyncio.get_running_loop().create_task(hold())
    await entered.wait()
    # The process is paused past the lease: its next renewal finds the lock lapsed.
    await clock.advance(20)
    with pytest.raises(LockLost) as caught:
        await task
    assert body_cancelled.is_set()
    lost = caught.value
    assert (lost.name, lost.mode, lost.token) == ("r", X, 1)
    assert "'r' (exclusive, fencing token 1) was lost" in str(lost)
    assert "ttl_s=9" in str(lost)
    assert task.cancelling() == 0  # the cancellation was the lock's, and is taken back


async def test_a_lost_lock_goes_to_the_next_holder_with_a_higher_token(
    app: QueueTasks, clock: FakeClock
) -> None:
    stale = Holder(app.lock("r", ttl=9))
    await stale.entered.wait()
    await clock.advance(20)
    with pytest.raises(LockLost):
        await stale.task
    fresh = Holder(app.lock("r"))
    await fresh.entered.wait()
    assert fresh.lock.token > stale.lock.token
    await fresh.done()


# -- leaving --------------------------------------------------------------------------------


async def test_the_lock_is_released_when_the_block_raises(app: QueueTasks) -> None:
    with pytest.raises(ZeroDivisionError):
        async with app.lock("r"):
            assert await holders(app) != []
            _ = 1 / 0
    assert await holders(app) == []


async def test_the_lock_is_released_when_the_holder_is_cancelled(app: QueueTasks) -> None:
    holder = Holder(app.lock("r"))
    await holder.entered.wait()
    waiter = Holder(app.lock("r"))
    await anyio.wait_all_tasks_blocked()
    holder.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder.task
    await waiter.entered.wait()  # woken by the release
    await waiter.done()


async def test_a_waiter_cancelled_withdraws_its_request(app: QueueTasks) -> None:
    reader = Holder(app.lock("r", shared=True))
    await reader.entered.wait()
    writer = Holder(app.lock("r"))
    await anyio.wait_all_tasks_blocked()
    late_reader = Holder(app.lock("r", shared=True))
    await anyio.wait_all_tasks_blocked()
    assert not late_reader.entered.is_set()
    writer.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer.task
    # The writer's request is gone, so the reader behind it joins the first one at once.
    await late_reader.entered.wait()
    assert await waiters(app) == []
    await reader.done()
    await late_reader.done()
    assert await holders(app) == []


# -- the handle -----------------------------------------------------------------------------


async def test_owners_are_unique_and_a_lock_is_entered_once(app: QueueTasks) -> None:
    locks = [app.lock("r", shared=True) for _ in range(100)]
    assert len({lock.owner for lock in locks}) == 100
    lock = locks[0]
    with pytest.raises(LifecycleError, match="not held yet"):
        _ = lock.token
    async with lock:
        assert lock.token == 1 and "held" in repr(lock)
    with pytest.raises(LifecycleError, match="already entered"):
        async with lock:
            pass


@pytest.mark.parametrize("name", ["", "a\x00b", "x" * 201, 7])
def test_bad_names_are_refused_where_given(name: object) -> None:
    app = QueueTasks(name="t")
    with pytest.raises(InvalidOption, match="lock name"):
        app.lock(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), "30", True])
def test_bad_ttls_are_refused(ttl: object) -> None:
    app = QueueTasks(name="t")
    with pytest.raises(InvalidOption, match="ttl must be a number of seconds > 0"):
        app.lock("r", ttl=ttl)  # type: ignore[arg-type]


async def test_renewals_that_fail_are_retried_until_the_lease_runs_out(
    app: QueueTasks, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    holder = Holder(app.lock("r", ttl=9))
    await holder.entered.wait()
    await app.coordination.close()  # every renewal now fails (the backend is unreachable)
    try:
        await clock.advance(3)
        await clock.advance(3)
        assert not holder.task.done()  # failed twice, but the lease has not run out yet
        assert "renewing lock 'r' failed (retried)" in caplog.text
        await clock.advance(3)
        with pytest.raises(LockLost, match="could not be renewed before its lease ran out"):
            await holder.task
    finally:
        await app.coordination.open()
