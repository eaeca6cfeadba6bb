"""QueueTasks construction (backend by URL, errors for bad URLs and missing drivers) and the app's
lifecycle: ``async with app``, misuse errors, ``app.running()`` readiness, cancellation,
graceful shutdown, startup/shutdown hooks and the caller's own exceptions.

Everything runs on the memory backend; time that matters is a `FakeClock`.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import anyio
import pytest

import taskflow._backends
from taskflow import (
    BackendUnavailable,
    ConfigError,
    GlobalConfig,
    Progress,
    QueueTasks,
    TaskContext,
    TaskStatus,
    WorkerState,
)
from taskflow.memory import MemoryBroker, MemoryStorage
from taskflow.testing import FakeClock

# -- construction --------------------------------------------------------------------------


def test_default_backend_is_memory() -> None:
    app = QueueTasks(name="t")
    assert isinstance(app.broker, MemoryBroker)
    assert app.storage is app.broker.storage


def test_memory_url_gives_the_memory_backend() -> None:
    app = QueueTasks(name="t", broker="memory://")
    assert isinstance(app.broker, MemoryBroker)
    assert isinstance(app.storage, MemoryStorage)


def test_unknown_url_scheme_is_a_config_error_listing_known_schemes() -> None:
    with pytest.raises(ConfigError, match=r"unknown backend URL 'mongo://x'.*redis://"):
        QueueTasks(name="t", broker="mongo://x")


def test_url_without_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown backend URL"):
        QueueTasks(name="t", broker="localhost:6379")


@pytest.mark.parametrize(
    ("url", "driver", "extra"),
    [
        ("redis://localhost:6379/0", "redis", "taskflow[redis]"),
        ("postgresql://localhost/db", "asyncpg", "taskflow[postgres]"),
    ],
)
def test_missing_driver_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, url: str, driver: str, extra: str
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == driver else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(taskflow._backends.importlib.util, "find_spec", find_spec)
    with pytest.raises(BackendUnavailable) as info:
        QueueTasks(name="t", broker=url)
    assert repr(driver) in str(info.value)
    assert f'pip install "{extra}"' in str(info.value)


def test_broker_and_storage_urls_on_different_servers_are_refused() -> None:
    with pytest.raises(ConfigError, match="different servers"):
        QueueTasks(name="t", broker="memory://", storage="redis://localhost:6379/0")


def test_storage_object_of_another_broker_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be one backend"):
        QueueTasks(name="t", broker=MemoryBroker(), storage=MemoryStorage())


def test_storage_object_alone_is_refused() -> None:
    with pytest.raises(ConfigError, match="pass broker="):
        QueueTasks(name="t", storage=MemoryStorage())


def test_broker_object_with_its_own_storage_is_accepted() -> None:
    broker = MemoryBroker()
    app = QueueTasks(name="t", broker=broker, storage=broker.storage)
    assert app.broker is broker


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (
            {"broker": 6379},
            r"broker=6379 \(int\) is neither a backend URL.*'redis://localhost:6379/0'",
        ),
        (
            {"broker": object()},
            r"broker=<object .*> \(object\) is neither a backend URL nor a Broker",
        ),
        ({"storage": 5432}, r"storage=5432 \(int\) is neither a backend URL nor a Storage"),
        ({"broker": True}, r"broker=True \(bool\) is neither"),
    ],
)
def test_a_backend_that_is_neither_url_nor_object_is_refused_at_construction(
    arguments: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        QueueTasks(name="t", **arguments)
    assert isinstance(info.value, TypeError)


def test_config_as_a_dict_is_refused_at_construction_showing_the_call_to_write() -> None:
    with pytest.raises(ConfigError, match=r"write config=GlobalConfig\(lease_s=5\)") as info:
        QueueTasks(name="t", config={"lease_s": 5})  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)
    with pytest.raises(ConfigError, match="is not a GlobalConfig"):
        QueueTasks(name="t", config="lease_s=5")  # type: ignore[arg-type]


async def test_an_app_with_a_short_lease_alone_runs_tasks() -> None:
    app = QueueTasks(name="t", config=GlobalConfig(lease_s=2, environ={}))

    @app.task
    async def ping() -> str:
        return "pong"

    assert app.config.heartbeat_s < app.config.lease_s
    with anyio.fail_after(10):
        async with app.running():
            assert await (await ping.add_task()).result(timeout=5) == "pong"


@pytest.mark.parametrize("name", ["", "a b", "my.app", "a:b", "x" * 41, "-lead", "ü", "a{b}", 7])
def test_an_app_name_that_cannot_namespace_the_server_is_refused_with_the_rule(name: Any) -> None:
    """The name namespaces the app's keys, tables and channels, so it is checked when the app
    is built, before any URL is used, with the rule in the message."""
    with pytest.raises(ConfigError, match=r"app name .* cannot be used: .* 1 to 40 letters"):
        QueueTasks(name, broker="redis://127.0.0.1:1/0")


@pytest.mark.parametrize("name", ["billing", "shop-api", "orders_v2", "2fa", "A" * 40])
def test_app_names_of_letters_digits_underscores_and_hyphens_are_accepted(name: str) -> None:
    assert QueueTasks(name).name == name


# -- lifecycle -----------------------------------------------------------------------------


async def test_async_with_opens_returns_the_app_and_closes() -> None:
    app = QueueTasks(name="t")
    assert not app.is_open
    async with app as entered:
        assert entered is app
        assert app.is_open
        assert app.broker.is_open
    assert not app.is_open
    assert not app.broker.is_open


async def test_a_call_on_an_app_nobody_opened_opens_it() -> None:
    app = QueueTasks(name="t")

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    assert not app.is_open
    handle = await add.add_task(1, 2)
    assert app.is_open and app.broker.is_open
    record = await app.get(handle.task_id)
    assert record is not None and record.name == add.name
    await app.close()  # a lazily opened app closes like any other
    assert not app.is_open and not app.broker.is_open


async def test_opens_nest_and_the_outermost_close_disconnects() -> None:
    app = QueueTasks(name="t")
    async with app:
        async with app:
            assert app.is_open
        assert app.is_open  # the inner block did not close the outer one's app
        await app.open()
        await app.close()
        assert app.is_open
    assert not app.is_open and not app.broker.is_open


async def test_a_closed_app_opens_again_with_its_tasks() -> None:
    app = QueueTasks(name="t")

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with app:
        first = await add.add_task(1, 2)
    assert not app.is_open
    async with app:
        assert await app.get(first.task_id) is not None  # the memory backend kept it
    second = await add.add_task(3, 4)  # and a call opens it again by itself
    async with app.running():
        assert await first.result(timeout=5) == 3
        assert await second.result(timeout=5) == 7


async def test_close_twice_is_a_no_op() -> None:
    app = QueueTasks(name="t")
    await app.open()
    await app.close()
    await app.close()
    assert not app.is_open


async def test_a_broker_opened_by_the_caller_stays_open_after_the_app_closes() -> None:
    broker = MemoryBroker()
    async with broker:
        async with QueueTasks(name="t", broker=broker):
            pass
        assert broker.is_open


# -- running() -----------------------------------------------------------------------------


async def test_running_reports_readiness_with_a_live_worker() -> None:
    app = QueueTasks(name="t")

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    with anyio.fail_after(10):
        async with app.running(concurrency=3) as starter:
            assert app.is_open
            assert starter.worker is not None
            assert starter.worker.concurrency == 3
            assert await (await add.add_task(2, 3)).result(timeout=5) == 5
    assert not app.is_open  # running() opened it, so running() closed it


async def test_running_inside_async_with_leaves_the_app_open() -> None:
    app = QueueTasks(name="t")
    with anyio.fail_after(10):
        async with app:
            async with app.running():
                pass
            assert app.is_open


async def test_callers_exception_inside_running_arrives_unwrapped() -> None:
    app = QueueTasks(name="t")

    class Boom(Exception):
        pass

    with anyio.fail_after(10), pytest.raises(Boom, match="mine"):
        async with app.running():
            raise Boom("mine")


async def test_cancelling_the_surrounding_scope_stops_and_releases_held_tasks() -> None:
    app = QueueTasks(name="t", config=GlobalConfig(shutdown_grace_s=0))
    started = anyio.Event()

    @app.task
    async def hold() -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with app:
            with anyio.CancelScope() as scope:
                async with app.running():
                    handle = await hold.add_task()
                    await started.wait()
                    assert await handle.status() is TaskStatus.RUNNING
                    scope.cancel()
                    await anyio.sleep_forever()
            assert scope.cancelled_caught
            info = await handle.info()
            assert info.status is TaskStatus.QUEUED  # released for redelivery
            assert info.attempts == 0  # and the attempt was refunded


async def test_graceful_shutdown_lets_a_running_task_finish_within_the_grace_period() -> None:
    clock = FakeClock()
    app = QueueTasks(name="t", clock=clock, config=GlobalConfig(shutdown_grace_s=30))
    started, proceed = anyio.Event(), anyio.Event()

    @app.task
    async def slow() -> str:
        started.set()
        await proceed.wait()
        return "finished"

    with anyio.fail_after(10):
        async with app:
            async with anyio.create_task_group() as tg:

                async def finish_later() -> None:
                    await started.wait()
                    await anyio.wait_all_tasks_blocked()
                    proceed.set()

                async with app.running():
                    handle = await slow.add_task()
                    await started.wait()
                    tg.start_soon(finish_later)
                # the block's exit waited for the task: it is done, not released
                assert await handle.status() is TaskStatus.DONE
            assert await handle.result(timeout=5) == "finished"


async def test_graceful_shutdown_releases_a_task_that_outlives_the_grace_period() -> None:
    clock = FakeClock()
    app = QueueTasks(name="t", clock=clock, config=GlobalConfig(shutdown_grace_s=5))
    started = anyio.Event()

    @app.task
    async def stuck() -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with app:
            async with anyio.create_task_group() as tg:
                starter_holder: list[Any] = []

                async def run_worker() -> None:
                    async with app.running() as starter:
                        starter_holder.append(starter)
                        await started.wait()
                    # leaving the block stops the worker gracefully

                handle = await stuck.add_task()
                tg.start_soon(run_worker)
                await started.wait()
                await anyio.wait_all_tasks_blocked()
                # the grace period is fake time: nothing is released until it passes
                await clock.advance(4)
                assert await handle.status() is TaskStatus.RUNNING
                await clock.advance(1)
            info = await handle.info()
            assert info.status is TaskStatus.QUEUED
            assert info.attempts == 0  # attempt refunded: it never had a fair run


async def test_a_task_released_by_a_graceful_shutdown_keeps_no_stale_progress() -> None:
    """Released mid-run (after 3 of 6), the task waits for its next attempt as one that has not
    run: no "3/6" from the interrupted attempt."""
    clock = FakeClock()
    app = QueueTasks(name="t", clock=clock, config=GlobalConfig(shutdown_grace_s=5))
    reported = anyio.Event()

    @app.task
    async def halfway(ctx: TaskContext) -> None:
        ctx.progress(3, 6)
        reported.set()
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with app:
            async with anyio.create_task_group() as tg:
                handle = await halfway.add_task()

                async def run_worker() -> None:
                    async with app.running():
                        await reported.wait()

                tg.start_soon(run_worker)
                await reported.wait()
                await anyio.wait_all_tasks_blocked()  # the report is stored, the stop waits
                assert (await handle.info()).progress == Progress(3, 6)
                await clock.advance(5)
            info = await handle.info()
            assert (info.status, info.attempts, info.progress) == (TaskStatus.QUEUED, 0, None)


async def test_graceful_shutdown_releases_a_sync_task_at_once_after_the_grace_period() -> None:
    """A thread cannot be stopped: after the grace period its task is released for another
    worker (attempt refunded) and the stop does not wait for the thread."""
    clock = FakeClock()
    app = QueueTasks(name="t", clock=clock, config=GlobalConfig(shutdown_grace_s=5))
    entered, release = threading.Event(), threading.Event()

    @app.task
    def blocking() -> str:
        entered.set()
        release.wait(10)
        return "too late"

    with anyio.fail_after(10):
        async with app:
            async with anyio.create_task_group() as tg:
                stop = anyio.Event()

                async def run_worker() -> None:
                    async with app.running():
                        await stop.wait()

                handle = await blocking.add_task()
                tg.start_soon(run_worker)
                await anyio.to_thread.run_sync(entered.wait, 10)
                stop.set()
                await anyio.wait_all_tasks_blocked()  # the stop now sleeps out the grace period
                await clock.advance(5)
            # the worker stopped while the thread still runs
            assert not release.is_set()
            info = await handle.info()
            assert (info.status, info.attempts) == (TaskStatus.QUEUED, 0)
            release.set()


async def test_startup_hooks_fill_state_and_shutdown_hooks_close_in_reverse_order() -> None:
    app = QueueTasks(name="t")
    calls: list[str] = []

    @app.on_startup
    async def open_pool(state: WorkerState) -> None:
        calls.append("open pool")
        state.pool = "pool"

    @app.on_startup
    async def open_client(state: WorkerState) -> None:
        calls.append("open client")
        state.client = "client"

    @app.on_shutdown
    async def close_pool(state: WorkerState) -> None:
        calls.append(f"close {state.pool}")

    @app.on_shutdown
    async def close_client(state: WorkerState) -> None:
        calls.append(f"close {state.client}")

    with anyio.fail_after(10):
        async with app.running() as starter:
            assert calls == ["open pool", "open client"]
            assert starter.state.pool == "pool"
    assert calls == ["open pool", "open client", "close client", "close pool"]


async def test_a_failing_startup_hook_propagates_as_itself_and_closes_the_app() -> None:
    app = QueueTasks(name="t")

    @app.on_startup
    async def connect(state: WorkerState) -> None:
        raise ConnectionError("database down")

    with anyio.fail_after(10), pytest.raises(ConnectionError, match="database down"):
        async with app.running():
            pytest.fail("the block must not run when startup fails")
    assert not app.is_open


def test_run_in_thread_runs_the_worker_on_a_background_loop() -> None:
    app = QueueTasks(name="t")
    seen: list[int] = []

    @app.task
    async def where() -> int:
        seen.append(threading.get_ident())
        return 1

    from taskflow import SyncTask

    with app.run_in_thread(concurrency=2) as starter:
        assert starter.worker is not None
        assert SyncTask(app).add_task(where.name).result(timeout=5) == 1
    assert seen and seen[0] != threading.get_ident()
    assert not app.is_open
