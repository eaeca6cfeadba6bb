"""Locks a task declares (``locks=[Shared(...)]``): the option's checks, and the worker's promises.
Readers run together; a writer waits for the running readers and then runs before readers that
came after it; a task waiting for a lock holds no worker slot and is woken by the release (the
clock never reaches its safety-net time); a cancelled parked task gives its place up; a lock
lost while the task runs stops it with `LockLost`.

Memory backend, `FakeClock` for every lease and heartbeat; `wait_all_tasks_blocked` waits for
the worker to settle (claim, ask for locks, park) since everything runs in this process.
"""

from __future__ import annotations

import anyio
import pytest

from taskflow import (
    EventKind,
    Exclusive,
    GlobalConfig,
    InvalidOption,
    QueueTasks,
    Shared,
    TaskFailed,
    TaskStatus,
)
from taskflow.abc import LockHold, LockMode, LockRequest
from taskflow.testing import FakeClock

LEASE_S = 10.0
HEARTBEAT_S = 3.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> QueueTasks:
    config = GlobalConfig(lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S, idle_poll_s=1000)
    return QueueTasks(name="t", clock=clock, config=config)


async def _waiters(app: QueueTasks, name: str = "t") -> list[str]:
    states = await app.broker.coordination.lock_states([name], now=app.clock.time())
    return [w.owner for state in states for w in state.waiters]


async def _holders(app: QueueTasks, name: str = "t") -> list[str]:
    states = await app.broker.coordination.lock_states([name], now=app.clock.time())
    return [h.owner for state in states for h in state.holders]


# -- the option ----------------------------------------------------------------------------


def test_lock_values_check_their_name() -> None:
    assert Shared("dwh.sales").mode is LockMode.SHARED
    assert Exclusive("dwh.sales").mode is LockMode.EXCLUSIVE
    assert Shared("a") == Shared("a") and hash(Shared("a")) == hash(Shared("a"))
    for bad in ("", "x\x00y", "n" * 201, 42):
        with pytest.raises(InvalidOption):
            Shared(bad)  # type: ignore[arg-type]


def test_the_locks_option_is_checked_where_it_is_given(app: QueueTasks) -> None:
    for bad in ("t", [("t", "shared")], [Shared("t"), Exclusive("t")], [Shared("t")] * 2, 5):
        with pytest.raises(InvalidOption, match="locks must be"):

            @app.task(name=f"bad{id(bad)}", locks=bad)  # type: ignore[arg-type]
            async def bad_task() -> None: ...

    @app.task(locks=[Shared("t")])
    async def fine() -> None: ...

    with pytest.raises(InvalidOption, match="locks must be"):
        fine.options(locks=[Exclusive("t"), Shared("t")])


async def test_the_locks_travel_in_the_message_and_a_call_overrides_them(app: QueueTasks) -> None:
    @app.task(locks=[Shared("t")])
    async def reader() -> None: ...

    async with app:
        by_default = await reader.add_task()
        by_call = await reader.options(locks=[Exclusive("u"), Shared("v")]).add_task()
        none = await reader.options(locks=[]).add_task()
        tasks = app.broker.storage.tasks  # type: ignore[attr-defined]
        assert tasks[by_default.task_id].msg.locks == [("t", LockMode.SHARED)]
        assert tasks[by_call.task_id].msg.locks == [
            ("u", LockMode.EXCLUSIVE),
            ("v", LockMode.SHARED),
        ]
        assert tasks[none.task_id].msg.locks == []


# -- the worker ----------------------------------------------------------------------------


async def test_readers_run_together(app: QueueTasks) -> None:
    both_in = anyio.Event()
    inside = 0

    @app.task(locks=[Shared("t")])
    async def reader() -> None:
        nonlocal inside
        inside += 1
        if inside == 2:
            both_in.set()
        await both_in.wait()

    with anyio.fail_after(10):
        async with app.running(concurrency=2):
            handles = [await reader.add_task() for _ in range(2)]
            for handle in handles:
                await handle.result(timeout=5)
            await anyio.wait_all_tasks_blocked()
            assert await _holders(app) == []  # released when the runs ended


async def test_a_writer_waits_for_readers_then_runs_before_later_readers(
    app: QueueTasks, clock: FakeClock
) -> None:
    log: list[str] = []
    go = anyio.Event()

    @app.task(locks=[Shared("t")])
    async def reader(name: str, block: bool) -> None:
        log.append(f"{name} start")
        if block:
            await go.wait()
        log.append(f"{name} end")

    @app.task(locks=[Exclusive("t")])
    async def writer() -> None:
        log.append("writer")

    with anyio.fail_after(10):
        async with app.running(concurrency=4):
            first = await reader.add_task("r1", True)
            await anyio.wait_all_tasks_blocked()
            assert log == ["r1 start"]
            swap = await writer.add_task()
            await anyio.wait_all_tasks_blocked()
            late = await reader.add_task("r2", False)
            await anyio.wait_all_tasks_blocked()
            # Both wait, parked in the broker, in the order they came: no reader jumps the writer.
            assert await _waiters(app) == [swap.task_id, late.task_id]
            assert log == ["r1 start"]
            assert await swap.status() is TaskStatus.SCHEDULED
            events = await app.storage.read_events("default")
            [parked] = [
                e for e in events if e.task_id == swap.task_id and e.kind is EventKind.RELEASED
            ]
            assert parked.detail == "WaitingForLock"  # what the event stream shows
            go.set()
            for handle in (first, swap, late):
                await handle.result(timeout=5)
    assert log == ["r1 start", "r1 end", "writer", "r2 start", "r2 end"]
    assert clock.time() == 1_700_000_000.0  # woken by the release, not the safety net


async def test_a_task_waiting_for_a_lock_holds_no_slot(app: QueueTasks) -> None:
    @app.task(locks=[Exclusive("t")])
    async def locked() -> str:
        return "locked ran"

    @app.task
    async def plain() -> str:
        return "plain ran"

    coordination = app.broker.coordination
    async with app:
        [token] = await coordination.acquire_locks(
            [LockRequest("t", "someone", LockMode.SHARED)], ttl_s=60, now=app.clock.time()
        )
        assert token is not None
    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            waiting = await locked.add_task()
            await anyio.wait_all_tasks_blocked()
            assert await _waiters(app) == [waiting.task_id]
            # The one slot is free: a task that needs no lock runs meanwhile.
            assert await (await plain.add_task()).result(timeout=5) == "plain ran"
            assert await waiting.status() is TaskStatus.SCHEDULED
            now = app.clock.time()
            granted = await coordination.release_locks(
                [LockHold("t", "someone", token)], ttl_s=LEASE_S, now=now
            )
            assert granted == [waiting.task_id]
            await app.broker.wake(granted, now=now)  # what a worker does after its release
            assert await waiting.result(timeout=5) == "locked ran"
            assert (await waiting.info()).attempts == 1  # parking spent no attempt


async def test_tasks_a_release_grants_are_woken_and_run_in_their_order(app: QueueTasks) -> None:
    order: list[int] = []

    @app.task(locks=[Shared("t")])
    async def reader(n: int) -> None:
        order.append(n)

    @app.task(locks=[Exclusive("t")])
    async def writer(go: bool) -> None:
        pass

    coordination = app.broker.coordination
    async with app:
        [token] = await coordination.acquire_locks(
            [LockRequest("t", "someone", LockMode.EXCLUSIVE)], ttl_s=60, now=app.clock.time()
        )
        assert token is not None
    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handles = [await reader.add_task(n) for n in range(5)]
            await anyio.wait_all_tasks_blocked()
            assert await _waiters(app) == [h.task_id for h in handles]
            now = app.clock.time()
            granted = await coordination.release_locks(
                [LockHold("t", "someone", token)], ttl_s=LEASE_S, now=now
            )
            assert granted == [h.task_id for h in handles]  # every reader at the head, at once
            await app.broker.wake(list(reversed(granted)), now=now)
            for handle in handles:
                await handle.result(timeout=5)
    assert order == [0, 1, 2, 3, 4]  # the ready order, whatever the order of the wake


async def test_a_cancelled_parked_task_gives_its_place_up(app: QueueTasks) -> None:
    go = anyio.Event()

    @app.task(locks=[Shared("t")])
    async def reader(block: bool) -> str:
        if block:
            await go.wait()
        return "read"

    @app.task(locks=[Exclusive("t")])
    async def writer() -> str:
        return "wrote"

    with anyio.fail_after(10):
        async with app.running(concurrency=2):
            holder = await reader.add_task(True)
            await anyio.wait_all_tasks_blocked()
            swap = await writer.add_task()
            await anyio.wait_all_tasks_blocked()
            late = await reader.add_task(False)
            await anyio.wait_all_tasks_blocked()
            assert await _waiters(app) == [swap.task_id, late.task_id]
            await swap.cancel()
            assert await swap.status() is TaskStatus.CANCELLED
            go.set()
            assert await holder.result(timeout=5) == "read"
            # The release grants the cancelled writer, whose request is withdrawn: the late
            # reader is granted next and runs.
            assert await late.result(timeout=5) == "read"
            await anyio.wait_all_tasks_blocked()
            assert await _waiters(app) == [] and await _holders(app) == []


async def test_a_lost_lock_stops_the_run_with_an_error_naming_it(
    app: QueueTasks, clock: FakeClock
) -> None:
    started = anyio.Event()
    stopped = anyio.Event()

    @app.task(locks=[Exclusive("dwh.sales")])
    async def swap() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()

    coordination = app.broker.coordination
    with anyio.fail_after(10):
        async with app.running():
            handle = await swap.add_task()
            await started.wait()
            [state] = await coordination.lock_states(["dwh.sales"], now=clock.time())
            [holder] = state.holders
            # Someone takes the lock away (as its lapse and a grant to another would).
            await coordination.release_locks(
                [LockHold("dwh.sales", holder.owner, holder.token)], ttl_s=LEASE_S, now=clock.time()
            )
            await clock.advance(HEARTBEAT_S)  # the renewal finds it lost
            await stopped.wait()
            with pytest.raises(TaskFailed) as info:
                await handle.result(timeout=5)
    assert info.value.error_type == "LockLost"
    assert "dwh.sales" in str(info.value)
