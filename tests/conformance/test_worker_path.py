"""Conformance through a real `Worker`: what a task does reaches the backend whole and in order.

These run a worker (in this event loop, on the fake clock) against each backend kind, for
promises that only hold if the worker orders its backend calls right: a backend with a pool of
connections runs two calls of one worker side by side, so the worker must not issue a call
that depends on another before that one returned.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from taskflow import (
    EncodeError,
    GlobalConfig,
    Progress,
    QueueTasks,
    TaskContext,
    TaskFailed,
    TaskStatus,
    Worker,
)
from taskflow.abc import Broker, Delivery, Lease, LeaseState, Outcome, ProgressUpdate
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


def nested(depth: int) -> list[Any]:
    """``[[[...]]]``, `depth` lists deep."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


async def test_a_value_nested_too_deeply_is_an_encode_error_not_a_recursion_error(
    backend: Broker, clock: FakeClock
) -> None:
    """msgspec follows nesting only to Python's recursion limit. Past it, an argument is refused
    with `EncodeError` before anything is stored, and a returned or yielded value fails its task
    as `UnencodableResult` (never retried); the worker goes on."""
    app = worker_app(backend, clock)
    too_deep = nested(10_000)

    @app.task(name="echo")
    async def echo(value: Any) -> Any:
        return value

    @app.task(name="returns_deep", retries=3)
    async def returns_deep() -> Any:
        return too_deep

    @app.task(name="yields_deep", retries=3)
    async def yields_deep() -> AsyncIterator[Any]:
        yield too_deep

    with anyio.fail_after(30):
        async with app, app.running(concurrency=2):
            with pytest.raises(EncodeError, match=r"'value'.*nested too deeply"):
                await echo.add_task(too_deep)
            with pytest.raises(EncodeError, match="nested too deeply"):
                await app.add_tasks([echo.prepare(too_deep)])
            assert (await backend.stats(["default"], now=clock.time()))[0].queued == 0
            for task in (returns_deep, yields_deep):
                handle = await task.add_task()
                with pytest.raises(TaskFailed) as failed:
                    await handle.result(timeout=10)
                assert failed.value.error_type == "UnencodableResult"
                assert "nested too deeply" in failed.value.error_message
                assert (await handle.info()).attempts == 1
            assert await (await echo.add_task(nested(50))).result(timeout=10) == nested(50)


async def test_a_stop_while_every_slot_is_busy_releases_them_when_the_grace_period_ends(
    backend: Broker, clock: FakeClock
) -> None:
    """Two long tasks on two slots: the claimer waits for a free slot. The grace period starts
    at the stop (not when a task ends, nor when the claimer and the drain get round to it), and
    what outlives it is released for redelivery with its attempt refunded."""
    config = GlobalConfig(idle_poll_s=1000, shutdown_grace_s=0.5)
    app = QueueTasks("conformance", broker=backend, clock=clock, config=config)
    starts: list[str] = []
    both_started = anyio.Event()

    @app.task(name="long")
    async def long(ctx: TaskContext) -> None:
        starts.append(ctx.task_id)
        if len(starts) == 2:
            both_started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(30):
        async with app:
            handles = [await long.add_task() for _ in range(2)]
            worker = Worker(app, concurrency=2)
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                await both_started.wait()
                await anyio.wait_all_tasks_blocked()
                worker.stop()
                await clock.advance(0.5)  # the whole grace period: the worker run ends
            infos = [await handle.info() for handle in handles]

    assert sorted(starts) == sorted(h.task_id for h in handles)
    assert [(i.status, i.attempts) for i in infos] == [(TaskStatus.QUEUED, 0)] * 2


async def test_the_grace_period_starts_at_the_stop_even_with_a_claim_in_flight(
    backend: Broker, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim in flight when the stop comes (a slow server) does not push the grace period
    back: once it returns, the running task is released at once if the grace period is over,
    and what the claim brought is released without being started."""
    config = GlobalConfig(idle_poll_s=1000, shutdown_grace_s=0.5)
    app = QueueTasks("conformance", broker=backend, clock=clock, config=config)
    starts: list[str] = []
    first_started = anyio.Event()

    @app.task(name="long")
    async def long(ctx: TaskContext) -> None:
        starts.append(ctx.task_id)
        first_started.set()
        await anyio.sleep_forever()

    claim = backend.claim
    hold_claims = False
    claiming, let_claim = anyio.Event(), anyio.Event()

    async def slow_claim(
        queues: Sequence[str], *, limit: int, lease_s: float, now: float, worker_id: str
    ) -> list[Delivery]:
        if hold_claims:
            claiming.set()
            await let_claim.wait()
        return await claim(queues, limit=limit, lease_s=lease_s, now=now, worker_id=worker_id)

    monkeypatch.setattr(backend, "claim", slow_claim)

    with anyio.fail_after(30):
        async with app:
            first = await long.add_task()
            worker = Worker(app, concurrency=2)
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                await first_started.wait()
                hold_claims = True
                second = await long.add_task()  # wakes the claimer for the free slot
                await claiming.wait()
                worker.stop()
                await clock.advance(0.5)  # the grace period passes while the claim is out
                let_claim.set()  # the worker run ends with no more time passing
            infos = [await first.info(), await second.info()]

    assert starts == [first.task_id]
    assert [(i.status, i.attempts) for i in infos] == [(TaskStatus.QUEUED, 0)] * 2
