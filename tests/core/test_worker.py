"""The worker's promises: bad input never stops it, timeouts interrupt async tasks (a sync task
keeps its slot until it returns), running tasks can be cancelled, a lapsed lease is re-delivered
and the zombie's late outcome is refused.

Memory backend, `FakeClock` for every timeout, lease and heartbeat.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import taskflow._outcome
from taskflow import (
    CancelResult,
    GlobalConfig,
    LifecycleError,
    QueueTasks,
    TaskCancelled,
    TaskContext,
    TaskFailed,
    TaskStatus,
    Worker,
)
from taskflow.abc import Outcome, OutcomeKind, TaskMessage, encode_value
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


def raw_message(app: QueueTasks, name: str, payload: bytes) -> TaskMessage:
    """A message as a foreign or broken producer might send it, bypassing every check."""
    return TaskMessage(
        id=app.broker.new_task_id("default"),
        name=name,
        queue="default",
        payload=payload,
        created_at=app.clock.time(),
    )


# -- bad input -----------------------------------------------------------------------------


async def test_arguments_that_do_not_bind_fail_the_task_and_the_worker_goes_on(
    app: QueueTasks,
) -> None:
    @app.task(name="add", retries=3)
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="sync_add", retries=3)
    def sync_add(a: int, b: int) -> int:
        return a + b

    @app.task(name="gen")
    def gen(n: int) -> Iterator[int]:
        yield n

    # The producer binds arguments before sending (tests/core/test_send_checks.py); a message from a
    # producer that does not know the task's signature still reaches the worker unchecked.
    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            for name, args in [("add", [1]), ("sync_add", [1, 2, 3]), ("gen", [])]:
                message = raw_message(app, name, encode_value((args, {})))
                await app.broker.enqueue([message], now=app.clock.time())
                handle = app.result(message.id)
                with pytest.raises(TaskFailed) as info:
                    await handle.result(timeout=5)
                assert info.value.error_type == "InvalidArguments"
                assert name in info.value.error_message
                assert (await handle.info()).attempts == 1  # never retried
            assert await (await add.add_task(2, 3)).result(timeout=5) == 5


async def test_an_undecodable_payload_fails_the_task_and_the_worker_goes_on(
    app: QueueTasks,
) -> None:
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            garbage = raw_message(app, "add", b"\xc1\xff not msgpack")
            wrong_shape = raw_message(app, "add", encode_value("not [args, kwargs]"))
            await app.broker.enqueue([garbage, wrong_shape], now=app.clock.time())
            for message, detail in [(garbage, "could not be decoded"), (wrong_shape, "[args")]:
                with pytest.raises(TaskFailed) as info:
                    await app.result(message.id).result(timeout=5)
                assert info.value.error_type == "UndecodablePayload"
                assert "'add'" in info.value.error_message
                assert detail in info.value.error_message
            assert await (await add.add_task(2, 3)).result(timeout=5) == 5


async def test_an_undecodable_message_fails_the_task_and_the_worker_goes_on(
    app: QueueTasks,
) -> None:
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    with anyio.fail_after(10):
        async with app:
            broken = await add.add_task(1, 1)
            # Corrupt the stored message itself (memory internals: no producer can do this).
            app.storage._tasks[broken.task_id].data = b"\x00 corrupt"  # type: ignore[attr-defined]
            async with app.running(concurrency=1):
                with pytest.raises(TaskFailed) as info:
                    await broken.result(timeout=5)
                assert info.value.error_type == "UndecodableMessage"
                assert await (await add.add_task(2, 3)).result(timeout=5) == 5


async def test_a_payload_nested_too_deeply_to_decode_fails_the_task_and_the_worker_goes_on(
    app: QueueTasks,
) -> None:
    """A foreign producer may send arguments nested deeper than msgspec follows (its limit is
    Python's recursion limit): the task fails as undecodable, saying why."""

    @app.task(name="echo")
    async def echo(value: object) -> object:
        return value

    # [[[[...]]], {}] as msgpack: 0x92 an array of two, 0x91 an array of one, 0x80 an empty map.
    deep = b"\x92" + b"\x91" * 10_000 + b"\x90\x80"
    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            message = raw_message(app, "echo", deep)
            await app.broker.enqueue([message], now=app.clock.time())
            with pytest.raises(TaskFailed) as info:
                await app.result(message.id).result(timeout=5)
            assert info.value.error_type == "UndecodablePayload"
            assert "nested too deeply to decode" in info.value.error_message
            assert await (await echo.add_task([1])).result(timeout=5) == [1]


async def test_an_unknown_task_name_fails_at_once_on_memory(app: QueueTasks) -> None:
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    with anyio.fail_after(10):
        async with app.running():
            message = raw_message(app, "renamed_long_ago", encode_value([[], {}]))
            await app.broker.enqueue([message], now=app.clock.time())
            with pytest.raises(TaskFailed) as info:
                await app.result(message.id).result(timeout=5)
            assert info.value.error_type == "UnknownTask"
            assert "'renamed_long_ago'" in info.value.error_message
            assert "add" in info.value.error_message  # names the known tasks
            assert await (await add.add_task(2, 3)).result(timeout=5) == 5


async def test_a_result_msgspec_cannot_encode_fails_the_task(app: QueueTasks) -> None:
    @app.task(retries=2)
    async def weird() -> object:
        return object()

    with anyio.fail_after(10):
        async with app.running():
            handle = await weird.add_task()
            with pytest.raises(TaskFailed) as info:
                await handle.result(timeout=5)
            assert info.value.error_type == "UnencodableResult"
            assert (await handle.info()).attempts == 1


async def test_an_exception_whose_str_fails_is_stored_and_the_worker_goes_on(
    app: QueueTasks,
) -> None:
    class Odd(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    @app.task
    async def odd() -> None:
        raise Odd()

    @app.task
    async def fine() -> int:
        return 1

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            with pytest.raises(TaskFailed) as info:
                await (await odd.add_task()).result(timeout=5)
            assert info.value.error_type == "Odd"
            assert "str() of the Odd failed" in info.value.error_message
            assert await (await fine.add_task()).result(timeout=5) == 1


async def test_a_bug_in_the_job_path_fails_that_task_only(
    app: QueueTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task
    async def victim() -> int:
        return 1

    @app.task(store_result=False)
    async def survivor() -> int:
        return 2

    def broken_encoder(value: object) -> bytes:
        raise RuntimeError("a bug in the worker")

    monkeypatch.setattr(taskflow._outcome, "encode_result", broken_encoder)
    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            with pytest.raises(TaskFailed) as info:
                await (await victim.add_task()).result(timeout=5)
            assert info.value.error_type == "WorkerError"
            # the one slot survived: the next task (which stores nothing) still runs
            assert await (await survivor.add_task()).result(timeout=5) is None


# -- timeouts ------------------------------------------------------------------------------


async def test_timeout_interrupts_an_async_task_with_task_timeout(
    app: QueueTasks, clock: FakeClock
) -> None:
    interrupted = anyio.Event()

    @app.task(timeout=5)
    async def slow() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            interrupted.set()

    with anyio.fail_after(10):
        async with app.running():
            handle = await slow.add_task()
            await anyio.wait_all_tasks_blocked()
            await clock.advance(4.9)
            assert await handle.status() is TaskStatus.RUNNING
            await clock.advance(0.1)
            await interrupted.wait()
            with pytest.raises(TaskFailed) as info:
                await handle.result(timeout=5)
    assert info.value.error_type == "TaskTimeout"
    assert "5" in info.value.error_message


async def test_a_timed_out_task_is_retried_if_retries_remain(
    app: QueueTasks, clock: FakeClock
) -> None:
    @app.task(timeout=5, retries=1, retry_backoff=10)
    async def slow_then_fast(ctx: TaskContext) -> int:
        if ctx.attempt == 1:
            await anyio.sleep_forever()
        return ctx.attempt

    with anyio.fail_after(10):
        async with app.running():
            handle = await slow_then_fast.add_task()
            await anyio.wait_all_tasks_blocked()
            await clock.advance(5)
            await anyio.wait_all_tasks_blocked()
            info = await handle.info()
            assert info.status is TaskStatus.RETRYING
            assert info.error is not None and info.error.type == "TaskTimeout"
            await clock.advance(10)
            assert await handle.result(timeout=5) == 2
            assert (await handle.info()).attempts == 2


async def test_a_task_that_swallows_its_timeout_leaves_no_stale_cancel_on_the_slot(
    app: QueueTasks, clock: FakeClock
) -> None:
    """asyncio counts cancellation requests per task (TaskGroup and timeout rely on the count);
    the next task on the same slot must not inherit the interrupted one's request."""

    @app.task(timeout=5)
    async def stubborn() -> str:
        try:
            await anyio.sleep_forever()
        except BaseException:
            return "ignored the cancel"
        return "unreachable"

    @app.task
    async def next_on_slot() -> int:
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await stubborn.add_task()
            await anyio.wait_all_tasks_blocked()
            await clock.advance(5)
            with pytest.raises(TaskFailed, match="TaskTimeout"):
                await handle.result(timeout=5)
            assert await (await next_on_slot.add_task()).result(timeout=5) == 0


async def test_a_sync_task_past_its_timeout_keeps_its_slot_until_it_returns(
    app: QueueTasks, clock: FakeClock
) -> None:
    """A thread cannot be interrupted: the timeout marks the run, the slot stays taken until the
    function returns, then the run fails with TaskTimeout and the next task gets the slot."""
    entered = threading.Event()
    release = threading.Event()

    @app.task(timeout=1)
    def blocking() -> str:
        entered.set()
        release.wait(10)
        return "too late"

    @app.task
    async def other() -> str:
        return "other"

    with anyio.fail_after(10):
        async with app.running(concurrency=1) as starter:
            stuck = await blocking.add_task()
            waiting = await other.add_task()
            await anyio.to_thread.run_sync(entered.wait, 10)
            await anyio.wait_all_tasks_blocked()  # the deadline sweep sleeps until 1 s
            await clock.advance(1)
            await anyio.wait_all_tasks_blocked()
            assert starter.worker is not None and starter.worker.running_tasks == 1
            assert await waiting.status() is TaskStatus.QUEUED  # the slot is still taken
            release.set()
            assert await waiting.result(timeout=5) == "other"
            with pytest.raises(TaskFailed) as info:
                await stuck.result(timeout=5)
    assert info.value.error_type == "TaskTimeout"


# -- cancellation --------------------------------------------------------------------------


async def test_cancel_a_queued_task(app: QueueTasks) -> None:
    ran: list[int] = []

    @app.task
    async def job() -> None:
        ran.append(1)

    with anyio.fail_after(10):
        async with app:
            handle = await job.options(delay=60).add_task()
            assert await handle.cancel() is CancelResult.CANCELLED
            async with app.running():
                with pytest.raises(TaskCancelled):
                    await handle.result(timeout=5)
                assert await handle.status() is TaskStatus.CANCELLED
                assert await handle.cancel() is CancelResult.ALREADY_TERMINAL
    assert ran == []


async def test_cancel_a_task_waiting_for_its_retry(app: QueueTasks, clock: FakeClock) -> None:
    runs: list[float] = []

    @app.task(retries=3, retry_backoff=10)
    async def flaky() -> None:
        runs.append(clock.time())
        raise ConnectionError("blink")

    with anyio.fail_after(10):
        async with app.running():
            handle = await flaky.add_task()
            await anyio.wait_all_tasks_blocked()
            assert await handle.status() is TaskStatus.RETRYING
            assert await handle.cancel() is CancelResult.CANCELLED
            await clock.advance(100)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(TaskCancelled):
                await handle.result(timeout=5)
    assert len(runs) == 1


async def test_cancel_a_running_async_task_interrupts_it_at_the_next_heartbeat(
    app: QueueTasks, clock: FakeClock
) -> None:
    started = anyio.Event()
    interrupted = anyio.Event()

    @app.task(retries=3)
    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            interrupted.set()

    with anyio.fail_after(10):
        async with app.running():
            handle = await forever.add_task()
            await started.wait()
            assert await handle.cancel() is CancelResult.REQUESTED
            await anyio.wait_all_tasks_blocked()
            assert not interrupted.is_set()  # it learns at the next lease renewal
            await clock.advance(HEARTBEAT_S)
            await interrupted.wait()
            with pytest.raises(TaskCancelled) as info:
                await handle.result(timeout=5)
            assert await handle.status() is TaskStatus.CANCELLED
            assert (await handle.info()).attempts == 1  # cancelled, not retried
    assert info.value.error_type == "Cancelled"


async def test_cancel_an_unknown_task(app: QueueTasks) -> None:
    async with app:
        assert await app.cancel("nope") is CancelResult.NOT_FOUND


# -- leases --------------------------------------------------------------------------------


async def test_leases_renew_while_a_long_task_runs(app: QueueTasks, clock: FakeClock) -> None:
    runs: list[int] = []
    proceed = anyio.Event()

    @app.task(retries=3)
    async def long(ctx: TaskContext) -> int:
        runs.append(ctx.attempt)
        await proceed.wait()
        return ctx.attempt

    with anyio.fail_after(10):
        async with app.running(), anyio.create_task_group() as tg:
            spare = Worker(app, worker_id="spare")  # would take the task if its lease lapsed
            await tg.start(spare.run)
            handle = await long.add_task()
            for _ in range(10):  # 30 s of fake time: three leases' worth
                await anyio.wait_all_tasks_blocked()
                await clock.advance(HEARTBEAT_S)
            assert runs == [1]
            proceed.set()
            assert await handle.result(timeout=5) == 1
            spare.stop()
    assert runs == [1]


async def test_a_lapsed_lease_is_redelivered_and_the_stale_outcome_refused(
    app: QueueTasks, clock: FakeClock
) -> None:
    @app.task(retries=1)
    async def job() -> str:
        return "ran"

    with anyio.fail_after(10):
        async with app:
            handle = await job.add_task()
            # A worker that claims the task and then dies: it never renews nor reports.
            (ghost,) = await app.broker.claim(
                ["default"], limit=1, lease_s=LEASE_S, now=clock.time(), worker_id="ghost"
            )
            async with app.running():
                await anyio.wait_all_tasks_blocked()
                assert await handle.status() is TaskStatus.RUNNING  # still the ghost's
                await clock.advance(LEASE_S)
                assert await handle.result(timeout=5) == "ran"
            late = Outcome(ghost.task_id, ghost.token, OutcomeKind.DONE, encode_value("zombie"))
            assert await app.broker.complete([late], now=clock.time()) == [False]
            assert await handle.result(timeout=5) == "ran"
            assert (await handle.info()).attempts == 2


async def test_two_workers_a_stalled_one_loses_its_task_and_its_late_outcome_is_refused(
    app: QueueTasks, clock: FakeClock
) -> None:
    release_first = anyio.Event()
    first_done = anyio.Event()

    @app.task(retries=1)
    async def job(ctx: TaskContext) -> str:
        if ctx.attempt == 1:
            try:
                await release_first.wait()
                return "stalled worker"
            finally:
                first_done.set()
        return "second worker"

    async def no_heartbeat() -> None:
        """Stands in for a worker whose renewals stopped (partition, blocked loop)."""

    with anyio.fail_after(10):
        async with app, anyio.create_task_group() as tg:
            stalled = Worker(app, concurrency=1, worker_id="stalled")
            stalled._heartbeat = no_heartbeat  # type: ignore[method-assign]
            await tg.start(stalled.run)
            handle = await job.add_task()
            await anyio.wait_all_tasks_blocked()
            assert stalled.running_tasks == 1
            healthy = Worker(app, concurrency=1, worker_id="healthy")
            await tg.start(healthy.run)
            await anyio.wait_all_tasks_blocked()  # asleep until the stalled lease lapses
            await clock.advance(LEASE_S)
            assert await handle.result(timeout=5) == "second worker"
            refused_before = app.broker.counters["refused"]
            release_first.set()
            await first_done.wait()
            await anyio.wait_all_tasks_blocked()
            assert app.broker.counters["refused"] == refused_before + 1
            assert await handle.result(timeout=5) == "second worker"
            stalled.stop()
            healthy.stop()


# -- claiming ahead -------------------------------------------------------------------------


class _Claims:
    """Records, per claim of the worker of `starter`, (its limit, the tasks the worker held
    then: running and waiting for a slot). Tasks are sent only once `starter` is set, so
    claims before that held none."""

    def __init__(self, app: QueueTasks, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[int, int]] = []
        self.starter: Any = None
        self._claim = app.broker.claim
        monkeypatch.setattr(app.broker, "claim", self._recorded)

    async def _recorded(self, queues: list[str], **kwargs: Any) -> Any:
        worker = None if self.starter is None else self.starter.worker
        held = 0 if worker is None else worker._busy + len(worker._ready)
        self.seen.append((kwargs["limit"], held))
        return await self._claim(queues, **kwargs)


async def _claims_running(
    app: QueueTasks, monkeypatch: pytest.MonkeyPatch, task: Any, n: int
) -> list[tuple[int, int]]:
    """Run `task(i)` for i < n on a worker of 2 slots, check every result, and return what
    `_Claims` saw."""
    claims = _Claims(app, monkeypatch)
    with anyio.fail_after(10):
        async with app.running(concurrency=2) as claims.starter:
            handles = await app.add_tasks([task.prepare(i) for i in range(n)])
            assert [await h.result(timeout=5) for h in handles] == list(range(n))
    return claims.seen


async def test_a_worker_of_short_tasks_claims_ahead_of_its_free_slots(
    app: QueueTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short tasks: once their pace is known, claims ask for more than the free slots (so a
    claim overlaps running tasks), but never more than one batch beyond the slots."""
    app.config = app.config.replace(claim_batch=5)

    @app.task
    async def quick(i: int) -> int:
        return i

    seen = await _claims_running(app, monkeypatch, quick, 40)
    assert any(limit > 2 - held for limit, held in seen), seen
    assert all(limit + held <= 2 + 5 for limit, held in seen), seen


@pytest.mark.parametrize("prefetch_wait_s", [0.0, 0.05])
async def test_no_claim_ahead_when_turned_off_or_for_long_tasks(
    app: QueueTasks, monkeypatch: pytest.MonkeyPatch, prefetch_wait_s: float
) -> None:
    """prefetch_wait_s=0 never claims ahead; nor does a worker whose tasks take longer than
    prefetch_wait_s per slot (here 0.1 s each on 2 slots: none finishes within 0.05 s)."""
    app.config = app.config.replace(claim_batch=5, prefetch_wait_s=prefetch_wait_s)

    @app.task
    async def slow(i: int) -> int:
        await anyio.sleep(0.1 if prefetch_wait_s else 0)  # the work itself, not a sync
        return i

    seen = await _claims_running(app, monkeypatch, slow, 6)
    assert seen and all(limit + held <= 2 for limit, held in seen), seen


# -- Worker misuse -------------------------------------------------------------------------


async def test_a_worker_runs_once_and_opens_the_app_it_needs(app: QueueTasks) -> None:
    for bad in (0, -1):  # 0 is refused, not taken for "the default"
        with pytest.raises(ValueError, match="concurrency must be >= 1"):
            Worker(app, concurrency=bad)
    assert Worker(app).concurrency == app.config.concurrency
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            worker = Worker(app)
            await tg.start(worker.run)
            assert app.is_open  # like any call that needs the backend
            worker.stop()
        with pytest.raises(LifecycleError, match="runs once"):
            await worker.run()
    await app.close()


async def test_a_stop_while_every_slot_is_busy_starts_the_grace_period_at_once(
    clock: FakeClock,
) -> None:
    """The claimer waits for a free slot when all are busy; a stop must not wait for one too,
    or the grace period (and the release of what outlives it) would not begin until a task
    ended by itself."""
    config = GlobalConfig(lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S, shutdown_grace_s=5)
    app = QueueTasks(name="t", clock=clock, config=config)
    started = anyio.Event()

    @app.task
    async def stuck() -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with app:
            async with anyio.create_task_group() as tg:
                handle = await stuck.add_task()
                worker = Worker(app, concurrency=1)
                await tg.start(worker.run)
                await started.wait()
                await anyio.wait_all_tasks_blocked()
                worker.stop()
                await anyio.wait_all_tasks_blocked()
                await clock.advance(5)
            info = await handle.info()
    assert info.status is TaskStatus.QUEUED
    assert info.attempts == 0


async def test_a_stop_while_an_outcome_waits_for_its_report_stores_the_outcome(
    app: QueueTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outcome waits for its task's report in flight; a stop in that moment must wait for
    both, not cancel the batch and release a task that already finished."""
    report = app.storage.report
    in_flight, let_through = anyio.Event(), anyio.Event()

    async def held_report(updates: Any, *, now: float) -> list[bool]:
        in_flight.set()
        await let_through.wait()
        return await report(updates, now=now)

    monkeypatch.setattr(app.storage, "report", held_report)

    @app.task
    async def steps(ctx: TaskContext) -> str:
        ctx.progress(1, 1)
        return "done"

    with anyio.fail_after(10):
        async with app:
            async with anyio.create_task_group() as tg:
                handle = await steps.add_task()
                worker = Worker(app, concurrency=1)
                await tg.start(worker.run)
                await in_flight.wait()
                await anyio.wait_all_tasks_blocked()  # the outcome waits for the report
                worker.stop()
                await anyio.wait_all_tasks_blocked()
                let_through.set()
            info = await handle.info()
    assert info.status is TaskStatus.DONE, info
    assert info.attempts == 1


# -- housekeeping --------------------------------------------------------------------------


async def test_the_worker_deletes_long_expired_records_now_and_then(clock: FakeClock) -> None:
    config = GlobalConfig(
        lease_s=LEASE_S,
        heartbeat_s=HEARTBEAT_S,
        idle_poll_s=1000,
        result_ttl_s=100,
        cleanup_interval_s=60,
    )
    app = QueueTasks(name="t", clock=clock, config=config)

    @app.task
    async def answer() -> int:
        return 42

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await answer.add_task()
            assert await handle.result() == 42
            await clock.advance(150)  # past the TTL: hidden, but the tombstone stays
            record = await app.get(handle.task_id)
            assert record is not None and record.result_expired
            for _ in range(3):  # two TTLs after the finish, the next sweep deletes it
                await clock.advance(60)
            assert await app.get(handle.task_id) is None
