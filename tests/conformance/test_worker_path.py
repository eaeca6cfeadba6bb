"""Conformance through a real `Worker`: what a task does reaches the backend whole and in order.

These run a worker (in this event loop, on the fake clock) against each backend kind, for
promises that only hold if the worker orders its backend calls right: a backend with a pool of
connections runs two calls of one worker side by side, so the worker must not issue a call
that depends on another before that one returned.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio
import anyio.lowlevel
import pytest

from taskflow import GlobalConfig, Progress, QueueTasks, TaskContext, TaskStatus
from taskflow.abc import Broker, Lease, LeaseState, Outcome, ProgressUpdate
from taskflow.testing import FakeClock


def worker_app(backend: Broker, clock: FakeClock) -> QueueTasks:
    """An app on the open `backend` whose worker is woken by pushes only (no idle sweep)."""
    return QueueTasks(
        "conformance", broker=backend, clock=clock, config=GlobalConfig(idle_poll_s=1000)
    )


async def test_the_last_progress_of_a_task_that_returns_at_once_is_kept(
    backend: Broker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = worker_app(backend, clock)

    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="steps")
    async def steps(ctx: TaskContext) -> str:
        for i in range(4):
            ctx.progress(i + 1, 4)
        return "done"

    # A slow link: each report stays in flight for a few loop turns, during which the worker
    # must not store the outcome of a task the report carries (the report would be refused).
    reporting: set[str] = set()
    outcomes_during_their_report: list[str] = []
    report, complete = backend.storage.report, backend.complete

    async def slow_report(updates: Sequence[ProgressUpdate], *, now: float) -> list[bool]:
        ids = {u.task_id for u in updates}
        reporting.update(ids)
        try:
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            return await report(updates, now=now)
        finally:
            reporting.difference_update(ids)

    async def watched_complete(outcomes: Sequence[Outcome], *, now: float) -> list[bool]:
        outcomes_during_their_report.extend(o.task_id for o in outcomes if o.task_id in reporting)
        return await complete(outcomes, now=now)

    monkeypatch.setattr(backend.storage, "report", slow_report)
    monkeypatch.setattr(backend, "complete", watched_complete)

    with anyio.fail_after(30):
        async with app, app.running(concurrency=20):
            # The sequence: a few tasks first, so a pool has more than one connection.
            for i in range(5):
                assert await (await add.add_task(i, i)).result(timeout=10) == 2 * i
            handle = await steps.add_task()
            assert await handle.result(timeout=10) == "done"
            info = await handle.info()

    assert info.progress == Progress(4, 4)
    assert outcomes_during_their_report == []


async def test_a_renewal_that_reaches_the_backend_after_the_outcome_is_no_lost_lease(
    backend: Broker,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The heartbeat renews every lease the worker holds, those of runs whose outcome is on its
    way included. When that outcome lands first, the renewal finds the task ended and answers
    "lost": that is a run that ended normally, not a lost lease to warn about and abandon."""
    config = GlobalConfig(idle_poll_s=1000, lease_s=10, heartbeat_s=3)
    app = QueueTasks("conformance", broker=backend, clock=clock, config=config)

    @app.task(name="quick")
    async def quick() -> str:
        return "ok"

    # The race, made deterministic: the outcome's store waits until the renewal has begun, and
    # the renewal reaches the backend only once the outcome is stored.
    complete, extend = backend.complete, backend.extend
    storing, renewing, stored, renewed = (anyio.Event() for _ in range(4))
    heard: list[LeaseState] = []

    async def held_complete(outcomes: Sequence[Outcome], *, now: float) -> list[bool]:
        storing.set()
        await renewing.wait()
        try:
            return await complete(outcomes, now=now)
        finally:
            stored.set()

    async def late_extend(
        leases: Sequence[Lease], *, lease_s: float, now: float
    ) -> list[LeaseState]:
        renewing.set()
        await stored.wait()
        states = await extend(leases, lease_s=lease_s, now=now)
        heard.extend(states)
        renewed.set()  # the heartbeat reads the states in this same step, before anyone else
        return states

    monkeypatch.setattr(backend, "complete", held_complete)
    monkeypatch.setattr(backend, "extend", late_extend)

    with anyio.fail_after(30), caplog.at_level(logging.WARNING, logger="taskflow.worker"):
        async with app, app.running(concurrency=1):
            handle = await quick.add_task()
            await storing.wait()
            await anyio.wait_all_tasks_blocked()
            await clock.advance(3)  # the heartbeat, while the outcome is on its way
            await renewed.wait()
            assert await handle.result(timeout=10) == "ok"
            info = await handle.info()

    assert heard == [LeaseState.LOST]  # the race happened: the outcome landed first
    assert not [r for r in caplog.records if "was lost" in r.getMessage()]
    assert info.status is TaskStatus.DONE
    assert info.attempts == 1
