"""Result handles: `AsyncResult` values, remote errors, timeouts, status, info, result expiry,
unknown ids and `app.get`. The blocking twins (`SyncTask` / `SyncResult`) are in test_sync.py.

Memory backend; time that matters (result TTL) is a `FakeClock`.
"""

from __future__ import annotations

import builtins

import anyio
import anyio.to_thread
import pytest

from taskflow import (
    AsyncResult,
    GlobalConfig,
    QueueTasks,
    ResultExpired,
    SyncResult,
    TaskContext,
    TaskFailed,
    TaskInfo,
    TaskNotFound,
    TaskStatus,
    TimeoutError,  # noqa: A004 - the deliberate builtin twin under test
)
from taskflow.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> QueueTasks:
    config = GlobalConfig(result_ttl_s=60, idle_poll_s=1000)
    return QueueTasks(name="t", clock=clock, config=config)


# -- AsyncResult ---------------------------------------------------------------------------


async def test_result_returns_the_value_with_its_type(app: QueueTasks) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task
    async def structured() -> dict[str, list[int]]:
        return {"xs": [1, 2]}

    with anyio.fail_after(10):
        async with app.running():
            handle: AsyncResult[int] = await add.add_task(2, 3)
            assert await handle.result(timeout=5) == 5
            assert await (await structured.add_task()).result(timeout=5) == {"xs": [1, 2]}


async def test_a_failed_task_raises_task_failed_with_the_remote_error(app: QueueTasks) -> None:
    @app.task
    async def divide(a: float, b: float) -> float:
        return a / b

    with anyio.fail_after(10):
        async with app.running():
            handle = await divide.add_task(1, 0)
            with pytest.raises(TaskFailed) as info:
                await handle.result(timeout=5)
    error = info.value
    assert error.task_id == handle.task_id
    assert error.error_type == "ZeroDivisionError"
    assert error.error_message == "division by zero"
    assert "Traceback" in error.remote_traceback
    assert "return a / b" in error.remote_traceback
    assert "ZeroDivisionError: division by zero" in str(error)


async def test_waiting_too_long_raises_taskflow_timeout_error_also_a_builtin(
    app: QueueTasks,
) -> None:
    @app.task
    async def later() -> None:
        pass

    async with app:  # no worker: it never finishes
        handle = await later.add_task()
        with anyio.fail_after(10), pytest.raises(TimeoutError) as info:
            await handle.result(timeout=0.01)
    assert isinstance(info.value, builtins.TimeoutError)
    assert handle.task_id in str(info.value)


async def test_status_and_info_follow_the_task(app: QueueTasks, clock: FakeClock) -> None:
    proceed = anyio.Event()

    @app.task
    async def work(ctx: TaskContext) -> str:
        ctx.progress(1, 3, "first third")
        await proceed.wait()
        return "done"

    created = clock.time()
    with anyio.fail_after(10):
        async with app:
            handle = await work.add_task()
            info = await handle.info()
            assert isinstance(info, TaskInfo)
            assert (info.status, info.attempts, info.created_at) == (TaskStatus.QUEUED, 0, created)
            assert info.started_at is None and info.finished_at is None
            assert info.name == work.name and info.queue == "default"
            async with app.running():
                await anyio.wait_all_tasks_blocked()
                await clock.advance(2)
                info = await handle.info()
                assert info.status is TaskStatus.RUNNING
                assert await handle.status() is TaskStatus.RUNNING
                assert info.attempts == 1
                assert info.started_at == created
                assert info.progress is not None
                assert (info.progress.done, info.progress.total) == (1, 3)
                assert info.progress.message == "first third"
                proceed.set()
                assert await handle.result(timeout=5) == "done"
                info = await handle.info()
    assert info.status is TaskStatus.DONE
    assert info.finished_at == created + 2
    assert info.error is None
    assert not info.result_expired


async def test_info_shows_the_error_of_a_failed_task(app: QueueTasks) -> None:
    @app.task
    async def boom() -> None:
        raise ValueError("bad value")

    with anyio.fail_after(10):
        async with app.running():
            handle = await boom.add_task()
            with pytest.raises(TaskFailed):
                await handle.result(timeout=5)
            info = await handle.info()
    assert info.status is TaskStatus.FAILED
    assert info.error is not None
    assert (info.error.type, info.error.message) == ("ValueError", "bad value")


async def test_result_expires_after_the_ttl_and_raises_at_once(
    app: QueueTasks, clock: FakeClock
) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    with anyio.fail_after(10):
        async with app.running():
            handle = await add.add_task(2, 3)
            assert await handle.result(timeout=5) == 5
            await clock.advance(59)
            assert await handle.result(timeout=5) == 5
            await clock.advance(1)
            with anyio.fail_after(1), pytest.raises(ResultExpired, match="result_ttl_s"):
                await handle.result(timeout=None)  # at once, not after the timeout
            info = await handle.info()
            assert info.status is TaskStatus.DONE and info.result_expired


async def test_unknown_id_raises_task_not_found(app: QueueTasks) -> None:
    async with app:
        handle = app.result("no-such-id")
        with anyio.fail_after(10), pytest.raises(TaskNotFound, match="no-such-id"):
            await handle.result(timeout=5)
        with pytest.raises(TaskNotFound):
            await handle.status()
        with pytest.raises(TaskNotFound):
            await handle.info()
        assert await app.get("no-such-id") is None


async def test_app_get_returns_the_stored_record(app: QueueTasks) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    with anyio.fail_after(10):
        async with app.running():
            handle = await add.options(priority=4).add_task(1, 1)
            await handle.result(timeout=5)
            record = await app.get(handle.task_id)
    assert record is not None
    assert (record.id, record.name, record.status) == (handle.task_id, add.name, TaskStatus.DONE)
    assert record.priority == 4
    assert record.result is not None  # encoded; AsyncResult decodes it


def test_handles_compare_by_task_id(app: QueueTasks) -> None:
    assert AsyncResult("a", app) == SyncResult("a", app)
    assert AsyncResult("a", app) != AsyncResult("b", app)
    assert len({AsyncResult("a", app), AsyncResult("a", app)}) == 1
