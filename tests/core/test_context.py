"""`TaskContext`: injected by annotation (first parameter or keyword-only), its ids and attempt
number, progress reported while the task runs (also from a thread), the task logger,
`cancel_requested` for code that cannot be interrupted, and `ctx.state` from startup hooks.
"""

from __future__ import annotations

import logging
import threading
import time

import anyio
import anyio.to_thread
import pytest

import taskflow
from taskflow import (
    GlobalConfig,
    QueueTasks,
    TaskCancelled,
    TaskContext,
    TaskRegistrationError,
    TaskStatus,
    WorkerState,
)
from taskflow.testing import FakeClock

HEARTBEAT_S = 3.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> QueueTasks:
    config = GlobalConfig(lease_s=10, heartbeat_s=HEARTBEAT_S, idle_poll_s=1000)
    return QueueTasks(name="t", clock=clock, config=config)


async def test_context_as_first_parameter(app: QueueTasks) -> None:
    @app.task
    async def who(ctx: TaskContext, a: int) -> list[object]:
        return [ctx.task_id, ctx.name, ctx.queue, ctx.attempt, a]

    with anyio.fail_after(10):
        async with app.running():
            handle = await who.add_task(7)
            assert await handle.result(timeout=5) == [handle.task_id, who.name, "default", 1, 7]


async def test_context_as_keyword_only_parameter(app: QueueTasks) -> None:
    @app.task
    def who(a: int, b: int = 0, *, ctx: TaskContext) -> list[object]:
        return [ctx.task_id, a, b]

    with anyio.fail_after(10):
        async with app.running():
            handle = await who.add_task(1, b=2)
            assert await handle.result(timeout=5) == [handle.task_id, 1, 2]


async def test_context_between_parameters_with_keyword_arguments(app: QueueTasks) -> None:
    @app.task(name="mid")
    async def mid(a: int, ctx: TaskContext, b: int) -> list[object]:
        return [a, ctx.attempt, b]

    with anyio.fail_after(10):
        async with app.running():
            assert await (await app.add_task("mid", args=(1,), kwargs={"b": 2})).result(5) == [
                1,
                1,
                2,
            ]
            by_name = await app.add_task("mid", kwargs={"a": 3, "b": 4})
            assert await by_name.result(5) == [3, 1, 4]


async def test_context_found_when_other_annotations_cannot_be_resolved(app: QueueTasks) -> None:
    # Annotations are strings here; one names a type only imported under TYPE_CHECKING, so
    # typing.get_type_hints fails and the raw "taskflow.TaskContext" string must still count.
    @app.task
    async def who(ctx: taskflow.TaskContext, amount: Decimal) -> str:  # noqa: F821
        return ctx.task_id

    assert who.definition.context_param == "ctx"
    with anyio.fail_after(10):
        async with app.running():
            handle = await who.add_task(3)  # type: ignore[arg-type]
            assert await handle.result(timeout=5) == handle.task_id


def test_context_cannot_be_var_args(app: QueueTasks) -> None:
    async def bad(*ctx: TaskContext) -> None:
        pass

    with pytest.raises(TaskRegistrationError, match=r"'ctx' cannot be \*args"):
        app.task(bad)


async def test_no_context_unless_annotated(app: QueueTasks) -> None:
    @app.task
    async def plain(ctx: int) -> int:
        return ctx

    with anyio.fail_after(10):
        async with app.running():
            assert await (await plain.add_task(5)).result(timeout=5) == 5


async def test_attempt_increments_and_idempotency_key_is_stable_across_retries(
    app: QueueTasks,
) -> None:
    seen: list[tuple[int, str, str]] = []

    @app.task(retries=2, retry_backoff=0)
    async def flaky(ctx: TaskContext) -> int:
        seen.append((ctx.attempt, ctx.idempotency_key, ctx.task_id))
        if ctx.attempt < 3:
            raise ConnectionError("blink")
        return ctx.attempt

    with anyio.fail_after(10):
        async with app.running():
            handle = await flaky.add_task()
            assert await handle.result(timeout=5) == 3
    assert [attempt for attempt, _, _ in seen] == [1, 2, 3]
    assert len({key for _, key, _ in seen}) == 1
    assert all(task_id == handle.task_id for _, _, task_id in seen)


async def test_headers_sent_with_the_task_reach_it_read_only_without_the_idempotency_key(
    app: QueueTasks,
) -> None:
    """A trace context sent with `options(headers=...)` is in `ctx.headers`; the reserved
    idempotency key is not (it is `ctx.idempotency_key`), so forwarding the headers to a child
    task continues the trace without handing the child the parent's key."""
    seen: dict[str, tuple[dict[str, str], str]] = {}
    trace = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}

    @app.task
    async def child(ctx: TaskContext) -> None:
        seen["child"] = (dict(ctx.headers), ctx.idempotency_key)

    @app.task
    async def parent(ctx: TaskContext) -> str:
        seen["parent"] = (dict(ctx.headers), ctx.idempotency_key)
        with pytest.raises(TypeError):
            ctx.headers["traceparent"] = "changed"  # type: ignore[index]
        handle = await child.options(headers=dict(ctx.headers)).add_task()
        return handle.task_id

    @app.task
    async def plain(ctx: TaskContext) -> dict[str, str]:
        return dict(ctx.headers)

    with anyio.fail_after(10):
        async with app.running():
            sent = parent.options(headers=trace, idempotency_key="charge-42")
            child_id = await (await sent.add_task()).result(timeout=5)
            await app.result(child_id).result(timeout=5)
            assert await (await plain.add_task()).result(timeout=5) == {}
    assert seen["parent"] == (trace, "charge-42")
    assert seen["child"] == (trace, child_id)


async def test_progress_from_a_sync_task_in_a_thread_is_visible_while_it_runs(
    app: QueueTasks,
) -> None:
    reported = threading.Event()
    finish = threading.Event()

    @app.task
    def crunch(ctx: TaskContext, n: int) -> int:
        assert threading.current_thread() is not threading.main_thread()
        ctx.progress(2, n, "two done")
        reported.set()
        finish.wait(10)
        ctx.progress(n, n)
        return n

    with anyio.fail_after(10):
        async with app.running():
            handle = await crunch.add_task(5)
            await anyio.to_thread.run_sync(reported.wait, 10)
            await anyio.wait_all_tasks_blocked()
            info = await handle.info()
            assert info.status is TaskStatus.RUNNING
            assert info.progress is not None
            assert (info.progress.done, info.progress.total, info.progress.message) == (
                2,
                5,
                "two done",
            )
            finish.set()
            assert await handle.result(timeout=5) == 5


async def test_the_context_logger_is_a_taskflow_logger_tagged_with_the_task_id(
    app: QueueTasks, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(name="logs")
    async def logs(ctx: TaskContext) -> None:
        ctx.logger.info("hello from %s", ctx.name)

    with anyio.fail_after(10), caplog.at_level(logging.INFO, logger="taskflow"):
        async with app.running():
            handle = await logs.add_task()
            await handle.result(timeout=5)
    (record,) = [r for r in caplog.records if r.getMessage() == "hello from logs"]
    assert record.name == "taskflow.task.logs"
    assert record.task_id == handle.task_id  # type: ignore[attr-defined]


@pytest.mark.parametrize("stop_by", ["raising", "returning"])
async def test_a_sync_task_sees_cancel_requested_and_decides_how_to_stop(
    app: QueueTasks, clock: FakeClock, stop_by: str
) -> None:
    """A thread cannot be interrupted: it polls `ctx.cancel_requested`. Raising then ends the
    task CANCELLED; returning a value keeps the value (the task chose to finish)."""
    started = threading.Event()

    @app.task
    def careful(ctx: TaskContext) -> str:
        started.set()
        for _ in range(2000):  # bounded: 10 s at most if the flag never came
            if ctx.cancel_requested:
                if stop_by == "raising":
                    raise RuntimeError("stopping: cancel requested")
                return "stopped early"
            time.sleep(0.005)
        return "never saw the cancel"

    with anyio.fail_after(15):
        async with app.running():
            handle = await careful.add_task()
            await anyio.to_thread.run_sync(started.wait, 10)
            await handle.cancel()
            await clock.advance(HEARTBEAT_S)  # the worker learns it when renewing the lease
            if stop_by == "raising":
                with pytest.raises(TaskCancelled):
                    await handle.result(timeout=12)
            else:
                assert await handle.result(timeout=12) == "stopped early"


async def test_ctx_state_holds_what_startup_hooks_created(app: QueueTasks) -> None:
    closed: list[str] = []

    @app.on_startup
    async def open_pool(state: WorkerState) -> None:
        state.pool = {"conn": "open"}

    @app.on_shutdown
    async def close_pool(state: WorkerState) -> None:
        state.pool["conn"] = "closed"
        closed.append("pool")

    @app.task
    async def use_pool(ctx: TaskContext) -> str:
        return str(ctx.state.pool["conn"])

    with anyio.fail_after(10):
        async with app.running():
            assert await (await use_pool.add_task()).result(timeout=5) == "open"
            assert closed == []
    assert closed == ["pool"]
