"""A claimed task's state (`taskflow._run.Run`) and the timeout sweep (`taskflow._deadlines`)
on their own, without a worker: sequenced with a fake clock, no sleeps."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from taskflow import Progress
from taskflow._deadlines import DeadlineSweep
from taskflow._exceptions import UnencodableResult
from taskflow._run import Run
from taskflow.abc import Delivery
from taskflow.testing import FakeClock


def new_run(reports: list[Run] | None = None) -> Run:
    delivery = Delivery("t-1", token=3, attempt=2, data=b"", lease_expires_at=0.0)
    return Run(delivery, on_report=(reports if reports is not None else []).append)


def test_a_run_carries_its_lease_and_reports_what_changed() -> None:
    reports: list[Run] = []
    run = new_run(reports)
    assert (run.task_id, run.token, run.attempt, run.started) == ("t-1", 3, 2, False)
    run.set_progress(Progress(1, 2, None))
    run.add_yield({"row": 1})
    assert reports == [run, run]
    assert run.yielded == [{"row": 1}] and len(run.pending_yields) == 1


def test_a_yield_that_cannot_be_encoded_is_refused() -> None:
    run = new_run()
    with pytest.raises(UnencodableResult, match="object"):
        run.add_yield(object())
    assert run.yielded == []


async def test_the_first_interruption_wins_and_cancels_an_async_run() -> None:
    run = new_run()
    run.kind = "async"

    async def body() -> None:
        await asyncio.Event().wait()

    run.task = asyncio.get_running_loop().create_task(body())
    await asyncio.sleep(0)
    run.interrupt("timeout")
    run.interrupt("cancel")
    assert run.interrupt_reason == "timeout"
    with pytest.raises(asyncio.CancelledError):
        await run.task


async def test_a_thread_run_is_only_marked() -> None:
    run = new_run()
    run.kind = "sync"
    run.task = asyncio.current_task()
    run.interrupt("shutdown")
    assert run.interrupt_reason == "shutdown"
    assert run.task is not None and not run.task.cancelling()


async def test_the_sweep_interrupts_runs_past_their_deadline_only() -> None:
    clock = FakeClock()
    sweep = DeadlineSweep(clock)
    late, done, later = new_run(), new_run(), new_run()
    for run in (late, done, later):
        run.kind = "sync"  # marked, not cancelled: the test's own task stays
        run.task = asyncio.current_task()
    done.task = None  # it left its sub-worker before its deadline
    async with anyio.create_task_group() as tg:
        tg.start_soon(sweep.loop)
        await anyio.wait_all_tasks_blocked()
        sweep.add(late, clock.time() + 5)
        sweep.add(done, clock.time() + 5)
        sweep.add(later, clock.time() + 50)
        await anyio.wait_all_tasks_blocked()
        await clock.advance(5)
        assert (late.interrupt_reason, done.interrupt_reason) == ("timeout", None)
        assert later.interrupt_reason is None
        await clock.advance(45)
        assert later.interrupt_reason == "timeout"
        tg.cancel_scope.cancel()
