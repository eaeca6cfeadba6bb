"""Hedged stragglers with two real workers (in one process) on memory, Redis and PostgreSQL:
the copy wins (the task's own run is stopped as one that lost its lease, its late outcome
refused), and the task wins (the running copy is cancelled, Superseded). One outcome either way,
and the event stream says a hedge started and which copy won. A copy starts at the step its
task got to.

The race itself is the contract's (tests/conformance/test_flows.py); here the workers drive it:
the worker running the straggler enqueues the copy once another worker is live, and the other
worker runs it. With worker processes: tests/backends/test_hedging_processes.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from taskflow import (
    GlobalConfig,
    Hedge,
    QueueTasks,
    TaskCancelled,
    TaskContext,
    TaskStatus,
    Worker,
)
from taskflow._hedging import HEDGE_KEY
from taskflow._ids import derived_task_id
from taskflow.abc import SUPERSEDED, EventKind, TaskRecord
from tests.cli_support import drop_shared, shared_url

pytestmark = pytest.mark.slow


@pytest.fixture(params=["memory", "redis", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "memory":
        yield None  # the embedded default
        return
    value = shared_url(request.param)
    try:
        yield value
    finally:
        drop_shared(value)


@pytest.fixture
async def app(url: str | None) -> AsyncIterator[QueueTasks]:
    config = GlobalConfig(lease_s=2.0, heartbeat_s=0.2, shutdown_grace_s=0.5)
    app = QueueTasks(name="hedging", broker=url, config=config)
    async with app:
        yield app


async def _record(app: QueueTasks, task_id: str) -> TaskRecord:
    record = await app.storage.get(task_id, now=app.clock.time())
    assert record is not None
    return record


async def test_the_copy_wins_and_the_straggler_is_stopped(app: QueueTasks) -> None:
    started: list[str] = []
    primary_started = anyio.Event()
    primary_stopped = anyio.Event()

    @app.task(hedge=Hedge(after=0.3))
    async def report(ctx: TaskContext) -> str:
        started.append(ctx.task_id)
        if len(started) == 1:
            primary_started.set()
            try:
                await anyio.sleep_forever()
            finally:
                primary_stopped.set()
        return f"from {ctx.task_id}"

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            first = await tg.start(Worker(app, worker_id="w1", concurrency=2).run)
            handle = await report.add_task()
            await primary_started.wait()
            second = await tg.start(Worker(app, worker_id="w2", concurrency=2).run)
            copy_id = derived_task_id(handle.task_id, HEDGE_KEY, "default")
            assert await handle.result(timeout=15) == f"from {copy_id}"
            await primary_stopped.wait()  # the loser's run was stopped (lease lost)
            first.stop()
            second.stop()

    assert started == [handle.task_id, copy_id]
    record = await _record(app, handle.task_id)
    copy = await _record(app, copy_id)
    assert (record.status, copy.status) == (TaskStatus.DONE, TaskStatus.DONE)
    assert (copy.outcome_to, copy.copy) == (handle.task_id, True)
    events = [
        (e.kind, e.detail)
        for e in await app.storage.read_events("default", limit=1000)
        if e.task_id == handle.task_id
    ]
    assert (EventKind.HEDGED, copy_id) in events
    assert (EventKind.DONE, f"won by copy {copy_id}") in events
    assert sum(kind is EventKind.DONE for kind, _ in events) == 1


async def test_the_task_wins_and_its_running_copy_is_cancelled(app: QueueTasks) -> None:
    copy_started = anyio.Event()
    copy_stopped = anyio.Event()
    started: list[str] = []

    @app.task(hedge=Hedge(after=0.3))
    async def report(ctx: TaskContext) -> str:
        started.append(ctx.task_id)
        if len(started) == 1:
            await copy_started.wait()
            return "from the task"
        copy_started.set()
        try:
            await anyio.sleep_forever()
        finally:
            copy_stopped.set()
        return "never"

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            first = await tg.start(Worker(app, worker_id="w1", concurrency=2).run)
            handle = await report.add_task()
            second = await tg.start(Worker(app, worker_id="w2", concurrency=2).run)
            assert await handle.result(timeout=15) == "from the task"
            await copy_stopped.wait()  # cancelled by request (its worker saw CANCEL)
            copy_id = derived_task_id(handle.task_id, HEDGE_KEY, "default")
            with pytest.raises(TaskCancelled):  # its end, pushed: its worker reported it
                await app.result(copy_id).result(timeout=15)
            copy = await _record(app, copy_id)
            first.stop()
            second.stop()

    assert copy.status is TaskStatus.CANCELLED
    assert copy.error is not None and copy.error.type == SUPERSEDED
    record = await _record(app, handle.task_id)
    assert record.status is TaskStatus.DONE
    events = [
        (e.kind, e.detail)
        for e in await app.storage.read_events("default", limit=1000)
        if e.task_id == handle.task_id
    ]
    assert (EventKind.HEDGED, copy_id) in events
    assert sum(kind is EventKind.DONE for kind, _ in events) == 1


async def test_the_copy_starts_at_the_step_its_task_got_to(app: QueueTasks) -> None:
    """A copy reads the step records of the task it copies: what the straggler recorded done
    is not done again; the step it is stuck in is run by the copy."""
    calls: list[tuple[str, str]] = []
    primary_stuck = anyio.Event()

    @app.task(hedge=Hedge(after=0.3))
    async def report(ctx: TaskContext) -> list[str]:
        async def part(name: str) -> str:
            calls.append((ctx.task_id, name))
            if name == "aggregate" and len(calls) == 2:  # the task's own run straggles here
                primary_stuck.set()
                await anyio.sleep_forever()
            return f"{name} by {ctx.task_id}"

        return [await ctx.step(name, part, name) for name in ("download", "aggregate")]

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            first = await tg.start(Worker(app, worker_id="w1", concurrency=2).run)
            handle = await report.add_task()
            await primary_stuck.wait()
            second = await tg.start(Worker(app, worker_id="w2", concurrency=2).run)
            result = await handle.result(timeout=15)
            first.stop()
            second.stop()

    copy_id = derived_task_id(handle.task_id, HEDGE_KEY, "default")
    assert calls == [
        (handle.task_id, "download"),
        (handle.task_id, "aggregate"),
        (copy_id, "aggregate"),
    ]
    assert result == [f"download by {handle.task_id}", f"aggregate by {copy_id}"]
