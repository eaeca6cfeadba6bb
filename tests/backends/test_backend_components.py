"""The shared components of `taskflow.abc`, on their own: `ResultWaiters` (register before the
read, woken by push) and `ReadCoalescer` (the reads of one loop turn as one batched read); and
the split of the contracts (task records in `Storage`, leases and key-value records in
`Coordination`)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

import anyio
import pytest

from taskflow import LifecycleError, TaskNotFound
from taskflow.abc import (
    Broker,
    Coordination,
    ReadCoalescer,
    ResultWaiters,
    Storage,
    TaskOutcome,
    TaskStatus,
)

QUEUED = TaskOutcome(id="t1", status=TaskStatus.QUEUED)
DONE = TaskOutcome(id="t1", status=TaskStatus.DONE, result=b"\x07")


class Reads:
    """A `read` for `ResultWaiters.wait` that returns the given outcomes in turn (the last one
    again and again) and counts its calls."""

    def __init__(self, *outcomes: TaskOutcome | None) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> TaskOutcome | None:
        self.calls += 1
        return self.outcomes[min(self.calls, len(self.outcomes)) - 1]


# -- ResultWaiters ---------------------------------------------------------------------------


async def test_a_waiter_is_registered_before_it_reads() -> None:
    waiters = ResultWaiters()
    registered: list[bool] = []

    async def read() -> TaskOutcome:
        registered.append("t1" in waiters)
        return DONE

    assert await waiters.wait("t1", read, timeout=None) == DONE
    assert registered == [True]
    assert "t1" not in waiters and len(waiters) == 0


async def test_a_wake_with_the_outcome_ends_the_wait_without_a_read() -> None:
    waiters = ResultWaiters()
    reads = Reads(QUEUED)
    got: list[TaskOutcome] = []

    async def wait() -> None:
        got.append(await waiters.wait("t1", reads, timeout=None))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            assert waiters.task_ids() == ["t1"]
            waiters.wake("t1", DONE)
    assert got == [DONE] and reads.calls == 1


async def test_a_bare_wake_reads_again() -> None:
    waiters = ResultWaiters()
    reads = Reads(QUEUED, QUEUED, DONE)
    got: list[TaskOutcome] = []

    async def wait() -> None:
        got.append(await waiters.wait("t1", reads, timeout=None))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            waiters.wake("t1")  # reads QUEUED again: keeps waiting
            await anyio.wait_all_tasks_blocked()
            assert got == [] and reads.calls == 2
            waiters.wake("t1", QUEUED)  # a wake with a non-terminal outcome reads too
    assert got == [DONE] and reads.calls == 3


async def test_an_end_between_the_read_and_the_sleep_is_not_missed() -> None:
    waiters = ResultWaiters()

    async def read_then_end() -> TaskOutcome:
        waiters.wake("t1", DONE)  # the push arrives before the waiter sleeps
        return QUEUED

    with anyio.fail_after(5):
        assert await waiters.wait("t1", read_then_end, timeout=None) == DONE


async def test_unknown_timeout_and_cancel_leave_no_waiter() -> None:
    waiters = ResultWaiters()
    with pytest.raises(TaskNotFound):
        await waiters.wait("t1", Reads(None), timeout=None)
    with pytest.raises(TimeoutError):
        await waiters.wait("t1", Reads(QUEUED), timeout=0.01)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(waiters.wait, "t1", Reads(QUEUED), timeout=None))
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert len(waiters) == 0


async def test_many_waiters_of_one_task_are_woken_together_and_close_cancels() -> None:
    waiters = ResultWaiters()
    got: list[TaskOutcome] = []

    async def wait(task_id: str) -> None:
        got.append(await waiters.wait(task_id, Reads(QUEUED), timeout=None))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(wait, "t1")
            await anyio.wait_all_tasks_blocked()
            waiters.wake("t1", DONE)
            waiters.wake("unknown", DONE)  # nobody waits: nothing happens
    assert got == [DONE] * 3
    pending = asyncio.ensure_future(waiters.wait("t2", Reads(QUEUED), timeout=None))
    await anyio.wait_all_tasks_blocked()
    waiters.close()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert len(waiters) == 0


# -- ReadCoalescer ---------------------------------------------------------------------------


class Batches:
    """A `read_batch` that records each batch of keys and returns the keys doubled."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.error: Exception | None = None

    async def __call__(self, keys: list[int]) -> Sequence[int]:
        self.batches.append(keys)
        await asyncio.sleep(0)  # a round trip
        if self.error is not None:
            raise self.error
        return [2 * key for key in keys]


async def test_reads_of_one_loop_turn_are_one_batch() -> None:
    batches = Batches()
    reads = ReadCoalescer(batches)
    got = await asyncio.gather(reads.read(1), reads.read_many([2, 3]), reads.read(1))
    assert got == [2, [4, 6], 2]
    assert batches.batches == [[1, 2, 3, 1]]
    assert await reads.read(5) == 10  # the next turn: a batch of its own
    assert batches.batches[-1] == [5]


async def test_a_failed_batch_fails_each_of_its_reads() -> None:
    batches = Batches()
    batches.error = ConnectionError("gone")
    reads = ReadCoalescer(batches)
    results = await asyncio.gather(reads.read(1), reads.read(2), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    batches.error = None
    assert await reads.read(3) == 6  # the next batch is not affected


async def test_a_cancelled_reader_does_not_disturb_the_others() -> None:
    batches = Batches()
    reads = ReadCoalescer(batches)
    cancelled = asyncio.ensure_future(reads.read(1))
    kept = asyncio.ensure_future(reads.read(2))
    await asyncio.sleep(0)
    cancelled.cancel()
    assert await kept == 4
    assert cancelled.cancelled()


async def test_close_fails_pending_and_in_flight_reads_with_a_lifecycle_error() -> None:
    started = asyncio.Event()

    async def never(keys: list[int]) -> Sequence[int]:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    reads: ReadCoalescer[int, int] = ReadCoalescer(never)
    in_flight = asyncio.ensure_future(reads.read(1))
    with anyio.fail_after(5):
        await started.wait()
    not_started = asyncio.ensure_future(reads.read(2))
    await asyncio.sleep(0)
    reads.close()
    for fut in (in_flight, not_started):
        with pytest.raises(LifecycleError, match="closed while a read was in flight"):
            await fut


# -- the split of the contracts ----------------------------------------------------------------


def test_storage_keeps_tasks_and_coordination_keeps_leases_and_records() -> None:
    coordination = {"acquire_lease", "renew_lease", "release_lease", "get_lease"}
    coordination |= {"kv_get", "kv_set", "kv_list", "kv_delete"}
    assert coordination <= set(dir(Coordination))
    assert not coordination & set(dir(Storage))
    assert not coordination & set(dir(Broker))
    assert {"wait", "get", "get_many", "report", "read_events", "cleanup"} <= set(dir(Storage))
    assert not {"wait_outcome", "cheap_reads", "coalesces_reads"} & set(dir(Storage))
    assert {"watch_work", "unwatch_work"} <= set(dir(Broker))
    assert "wait_for_work" not in dir(Broker)
    assert {"_watch_work", "_unwatch_work"} <= Broker.__abstractmethods__
