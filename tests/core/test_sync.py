"""The blocking client for plain synchronous code: `SyncTask` / `SyncResult`.

Three ways a sync caller meets the app: a worker running on a background loop
(`app.run_in_thread`), a worker thread of a loop that runs the app (`app.running()` plus
`anyio.to_thread`), and a producer with no loop at all (the app opens itself on a private
background loop). Calling the blocking API on the loop thread itself is refused.
"""

from __future__ import annotations

import threading

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from taskflow import (
    CancelResult,
    LifecycleError,
    QueueTasks,
    SyncResult,
    SyncTask,
    TaskFailed,
    TaskStatus,
    TimeoutError,  # noqa: A004 - the deliberate builtin twin under test
    Worker,
)


@pytest.fixture
def app() -> QueueTasks:
    return QueueTasks(name="t")


def _private_loop_threads() -> list[str]:
    """The threads running an app's private loop (named after the app)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("taskflow-")]


# -- SyncTask / SyncResult from plain synchronous code --------------------------------------


def test_sync_task_with_run_in_thread() -> None:
    app = QueueTasks(name="t")

    @app.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="boom")
    async def boom() -> None:
        raise KeyError("k")

    with app.run_in_thread(concurrency=4):
        client = SyncTask(app)
        handle = client.add_task("add", args=(2, 3), priority=1)
        assert isinstance(handle, SyncResult)
        assert handle.result(timeout=5) == 5
        assert handle.status() is TaskStatus.DONE
        assert handle.info().attempts == 1
        handles = [client.add_task("add", args=(i, i)) for i in range(5)]
        assert [h.result(timeout=5) for h in handles] == [0, 2, 4, 6, 8]
        with pytest.raises(TaskFailed, match="KeyError"):
            client.add_task("boom").result(timeout=5)
        never = client.add_task("add", args=(1, 1), delay=3600)
        with pytest.raises(TimeoutError):
            never.result(timeout=0.01)
        assert never.cancel() is CancelResult.CANCELLED


async def test_sync_task_from_a_worker_thread_while_the_loop_runs_the_app(
    app: QueueTasks,
) -> None:
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    def plain_code() -> tuple[int, int]:
        handle = SyncTask(app).add_task("add", args=(2, 3))
        return handle.result(timeout=5), threading.get_ident()

    with anyio.fail_after(10):
        async with app.running():
            value, thread = await anyio.to_thread.run_sync(plain_code)
    assert value == 5
    assert thread != threading.get_ident()


async def test_sync_task_on_the_loop_thread_is_refused_with_a_helpful_message(
    app: QueueTasks,
) -> None:
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    async with app:
        with pytest.raises(LifecycleError, match=r"event loop.*AsyncTask / AsyncResult"):
            SyncTask(app).add_task("add", args=(2, 3))
        handle = await add.add_task(1, 2)
        with pytest.raises(LifecycleError, match="await"):
            SyncResult(handle.task_id, app).result(timeout=1)


def test_a_producer_without_a_loop_opens_the_app_on_a_private_loop(app: QueueTasks) -> None:
    @app.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    try:
        handle = SyncTask(app).add_task("add", args=(1, 2), priority=2)
        assert app.is_open
        assert handle.status() is TaskStatus.QUEUED
        info = handle.info()
        assert (info.name, info.attempts) == ("add", 0)
        with pytest.raises(TimeoutError):
            handle.result(timeout=0.01)  # nobody runs it
        assert handle.cancel() is CancelResult.CANCELLED
        assert handle.status() is TaskStatus.CANCELLED
    finally:
        app.close_sync()
    assert not app.is_open
    assert _private_loop_threads() == []


async def test_sync_task_inside_any_running_loop_is_refused_even_before_the_app_opens(
    app: QueueTasks,
) -> None:
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(LifecycleError, match="AsyncTask / AsyncResult with await"):
        SyncTask(app).add_task("add", args=(2, 3))
    assert not app.is_open  # it did not start a private loop behind the caller's back


def test_run_in_thread_takes_the_app_over_from_the_private_loop(app: QueueTasks) -> None:
    @app.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    first = SyncTask(app).add_task("add", args=(1, 2))  # opens the app on a private loop
    private = app.lifecycle.loop
    with app.run_in_thread():
        assert app.lifecycle.loop is not private  # the worker's loop owns it now
        assert first.result(timeout=5) == 3
        assert SyncTask(app).add_task("add", args=(2, 3)).result(timeout=5) == 5
    assert not app.is_open


async def test_a_worker_takes_the_app_over_from_the_private_loop(app: QueueTasks) -> None:
    @app.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    def send_from_plain_code() -> SyncResult[int]:
        return add.add_task_sync(1, 2)  # opens the app on a private loop

    sent = await anyio.to_thread.run_sync(send_from_plain_code)
    assert _private_loop_threads() == ["taskflow-t"]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            worker = Worker(app)
            await tg.start(worker.run)
            assert _private_loop_threads() == []  # the private loop stopped
            assert await app.result(sent.task_id).result(timeout=5) == 3
            worker.stop()
    await app.close()


async def test_a_worker_refuses_an_app_open_on_a_loop_running_in_another_thread(
    app: QueueTasks,
) -> None:
    @app.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    with anyio.from_thread.start_blocking_portal() as portal:
        portal.call(app.open)
        try:
            with pytest.raises(LifecycleError, match="another thread, which owns its backend"):
                await Worker(app).run()
            with pytest.raises(LifecycleError, match="another thread"):
                await add.add_task(1, 2)
            # Blocking calls from plain threads run on the loop that owns the app.
            sent = await anyio.to_thread.run_sync(lambda: add.add_task_sync(1, 2))
            assert await anyio.to_thread.run_sync(sent.status) is TaskStatus.QUEUED
        finally:
            portal.call(app.close)
