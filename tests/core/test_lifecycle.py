"""The app's lifecycle as a module-level app meets it, on every backend.

A module builds ``app = QueueTasks(...)`` and decorates its tasks at import, outside any event
loop; then a script, a web app and a test suite use it from many loops. So: the first call that
needs the backend opens the app on the running loop; the app closes with the loop that owns it
and opens again on the next one (or after an explicit close); an app whose loop was closed by
hand reconnects instead of touching that loop; a FastAPI app's lifespan can be entered again;
and the blocking calls of plain code (``add_task_sync``) leave nothing running when they fail.

Each test builds its app outside any loop (`make_app`), as a module would, and runs on every
backend through `backend_url`, because each binds its connections to a loop in its own way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taskflow import (
    LifecycleError,
    QueueTasks,
    SyncResult,
    TaskflowError,
    TaskFunc,
    TaskNotFound,
    TaskStatus,
    TimeoutError,  # noqa: A004 - the deliberate builtin twin under test
)
from taskflow.redis import from_url as redis_from_url
from tests.plugins.backend_postgres import drop_schema, random_schema
from tests.plugins.backend_redis import delete_prefix, random_prefix
from tests.services import free_port, postgres_dsn, redis_url

KINDS = [
    pytest.param("memory"),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis_cluster", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
]

#: How long a script may take to exit after its last line.
EXIT_AFTER_LAST_LINE_S = 5.0


@pytest.fixture(params=KINDS)
def backend_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL for an app on each backend, isolated (its own key prefix or schema) and cleaned
    up afterwards."""
    kind: str = request.param
    if kind == "memory":
        yield "memory://"
    elif kind == "postgres":
        dsn, schema = postgres_dsn(), random_schema()
        yield f"{dsn}?schema={schema}"
        asyncio.run(drop_schema(dsn, schema))
    else:
        base = redis_url() if kind == "redis" else request.getfixturevalue("redis_cluster_url")
        url = f"{base}?prefix={random_prefix()}"
        yield url
        asyncio.run(_delete_keys(url))


async def _delete_keys(url: str) -> None:
    async with redis_from_url(url) as broker:
        await delete_prefix(broker)


def make_app(url: str) -> tuple[QueueTasks, TaskFunc[[int, int], int]]:
    """What a module does at import: an app and a task, built outside any event loop."""
    app = QueueTasks(name="shop", broker=url)

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    return app, add


def _private_loop_threads() -> list[str]:
    """The threads running an app's private loop for blocking calls (named after the app)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("taskflow-")]


async def _result_with_a_worker(app: QueueTasks, task_id: str) -> Any:
    async with app.running():
        with anyio.fail_after(10):
            return await app.result(task_id).result(timeout=10)


# -- opened by the first call, on the running loop ---------------------------------------------


async def test_concurrent_first_sends_open_the_app_once(backend_url: str) -> None:
    app, add = make_app(backend_url)
    opened = 0
    open_backend = app.broker.open

    async def counting_open() -> None:
        nonlocal opened
        opened += 1
        await open_backend()

    app.broker.open = counting_open  # type: ignore[method-assign]
    with anyio.fail_after(20):
        handles = await asyncio.gather(*(add.add_task(i, i) for i in range(20)))
        assert opened == 1 and app.is_open
        records = await app.storage.get_many([h.task_id for h in handles], now=time.time())
    assert all(r is not None and r.status is TaskStatus.QUEUED for r in records)
    await app.close()
    assert not app.is_open


_FIRST_CALLS: dict[str, Callable[[QueueTasks, TaskFunc[[int, int], int]], Awaitable[object]]] = {
    "add_task": lambda app, add: add.add_task(1, 2),
    "options().add_task": lambda app, add: add.options(priority=5).add_task(1, 2),
    "add_tasks": lambda app, add: app.add_tasks([add.prepare(1, 2)]),
    "app.add_task": lambda app, add: app.add_task(add.name, args=(1, 2)),
    "get": lambda app, add: app.get("unknown"),
    "cancel": lambda app, add: app.cancel("unknown"),
    "dead_letters": lambda app, add: app.dead_letters(),
    "requeue": lambda app, add: app.requeue(["unknown"]),
    "handle.result": lambda app, add: app.result("unknown").result(timeout=1),
    "handle.status": lambda app, add: app.result("unknown").status(),
    "handle.cancel": lambda app, add: app.result("unknown").cancel(),
}


@pytest.mark.parametrize("call", list(_FIRST_CALLS))
async def test_every_call_that_needs_the_backend_opens_the_app(call: str) -> None:
    app, add = make_app("memory://")
    with contextlib.suppress(TaskNotFound):  # an unknown id is found unknown, not "not open"
        await _FIRST_CALLS[call](app, add)
    assert app.is_open
    await app.close()


# -- closed with its loop, opened again on the next ----------------------------------------------


def test_two_asyncio_runs_with_one_module_level_app(backend_url: str) -> None:
    app, add = make_app(backend_url)

    async def send() -> str:
        handle = await add.add_task(2, 3)  # opens the app on this loop
        assert app.is_open
        return handle.task_id

    task_id = asyncio.run(send())
    assert not app.is_open  # it closed with its loop
    # Another loop: the app opens again, and the task sent before is still there (in memory
    # too: its data lives as long as the app object, like a server's).
    assert asyncio.run(_result_with_a_worker(app, task_id)) == 5
    assert not app.is_open

    async def read_explicitly() -> TaskStatus:
        async with app:
            return await app.result(task_id).status()

    assert asyncio.run(read_explicitly()) is TaskStatus.DONE


# On purpose: the connections opened on the loop closed by hand can no longer be closed (closing
# needs their loop), so the app drops them and their finalizers warn that they were not closed.
@pytest.mark.filterwarnings(
    "ignore:unclosed:ResourceWarning", "ignore:loop is closed:ResourceWarning"
)
def test_an_app_whose_loop_was_closed_by_hand_reconnects_on_the_next(backend_url: str) -> None:
    app, add = make_app(backend_url)

    async def send_and_wait() -> tuple[str, asyncio.Task[int]]:
        handle = await add.add_task(1, 1)
        waiting = asyncio.ensure_future(handle.result())  # left waiting on this loop
        await anyio.wait_all_tasks_blocked()
        return handle.task_id, waiting

    loop = asyncio.new_event_loop()
    try:
        task_id, waiting = loop.run_until_complete(send_and_wait())
    finally:
        loop.close()  # by hand: nothing closed the app, nothing cancelled the waiter
    # As the garbage collector would, while nothing is freed yet (CPython 3.11's collector can
    # crash finalising such a coroutine inside a reference cycle).
    waiting.get_coro().close()
    assert asyncio.run(_result_with_a_worker(app, task_id)) == 2
    gc.collect()  # the dropped connections' finalizers run here, under this test's filters


def test_an_async_caller_takes_the_app_over_from_the_private_loop(backend_url: str) -> None:
    app, add = make_app(backend_url)
    sent = add.add_task_sync(2, 3)  # opens the app on a private loop
    assert _private_loop_threads() == ["taskflow-shop"]
    assert asyncio.run(_result_with_a_worker(app, sent.task_id)) == 5
    assert _private_loop_threads() == []
    assert sent.status() is TaskStatus.DONE  # plain code again: a private loop again
    app.close_sync()
    assert _private_loop_threads() == [] and not app.is_open


async def test_the_private_loop_is_not_taken_over_while_a_blocking_call_runs_on_it() -> None:
    app, add = make_app("memory://")
    entered, release = threading.Event(), threading.Event()

    async def held_on_the_private_loop() -> None:
        entered.set()
        await anyio.to_thread.run_sync(release.wait)

    blocking = threading.Thread(target=app.lifecycle.call_sync, args=(held_on_the_private_loop,))
    blocking.start()
    try:
        assert await anyio.to_thread.run_sync(entered.wait, 10)
        with pytest.raises(LifecycleError, match="one of them is running in another thread"):
            await add.add_task(1, 2)
    finally:
        release.set()
        await anyio.to_thread.run_sync(blocking.join, 10)
    await add.add_task(1, 2)  # once it is done, this loop takes the app over
    assert _private_loop_threads() == []
    await app.close()


# -- a web app entered twice (FastAPI lifespan, Starlette's TestClient) ----------------------------


def make_api(app: QueueTasks, add: TaskFunc[[int, int], int], lifespan: str) -> FastAPI:
    """A FastAPI app over a module-level taskflow app; `lifespan` says what it does with it:
    ``running`` (a worker in the web app's loop), ``open`` (the app only), or ``none`` (the
    requests open it)."""

    @contextlib.asynccontextmanager
    async def with_taskflow(api: FastAPI) -> AsyncIterator[None]:
        if lifespan == "running":
            async with app.running():
                yield
        elif lifespan == "open":
            async with app:
                yield
        else:
            yield

    api = FastAPI(lifespan=with_taskflow)

    @api.post("/add")
    async def send(a: int, b: int) -> dict[str, str]:
        return {"id": (await add.add_task(a, b)).task_id}

    @api.get("/task")
    async def read(task_id: str) -> dict[str, Any]:
        handle = app.result(task_id)
        if lifespan == "running":
            return {"result": await handle.result(timeout=10)}
        return {"status": (await handle.status()).value}

    return api


@pytest.mark.parametrize("lifespan", ["running", "open", "none"])
def test_a_fastapi_app_with_a_module_level_app_is_entered_twice(
    backend_url: str, lifespan: str
) -> None:
    app, add = make_app(backend_url)
    api = make_api(app, add, lifespan)
    expected = {"result": 5} if lifespan == "running" else {"status": "queued"}
    for _ in range(2):
        with TestClient(api) as client:
            task_id = client.post("/add", params={"a": 2, "b": 3}).raise_for_status().json()["id"]
            reply = client.get("/task", params={"task_id": task_id}).raise_for_status()
            assert reply.json() == expected
        assert not app.is_open  # closed by the lifespan, or with the client's event loop


# -- blocking calls from plain code -------------------------------------------------------------


def test_add_task_sync_sends_from_plain_code(backend_url: str) -> None:
    app, add = make_app(backend_url)
    with app.run_in_thread():
        handle = add.add_task_sync(2, 3)
        assert isinstance(handle, SyncResult)
        assert handle.result(timeout=10) == 5
        urgent = add.options(priority=5).add_task_sync(40, 2)
        assert urgent.result(timeout=10) == 42


async def test_add_task_sync_on_an_event_loop_is_refused() -> None:
    app, add = make_app("memory://")
    with pytest.raises(LifecycleError, match=r"add_task_sync.*with\s+await"):
        add.add_task_sync(1, 2)
    assert not app.is_open


def test_a_failed_first_blocking_call_leaves_nothing_running() -> None:
    app, add = make_app(f"postgresql://taskflow@127.0.0.1:{free_port()}/nobody")  # nobody there
    with pytest.raises((OSError, TaskflowError)):  # refused (BackendUnavailable, in time)
        add.add_task_sync(1, 2)
    assert _private_loop_threads() == [] and not app.is_open


_SCRIPT = """
import asyncio, sys, time
from taskflow import QueueTasks, SyncTask

app = QueueTasks(name="script", broker=sys.argv[1])

@app.task
async def add(a: int, b: int) -> int:
    return a + b

async def use_and_close() -> None:
    async with app:
        pass

if sys.argv[2] == "closed":
    asyncio.run(use_and_close())
try:
    print("sent:", SyncTask(app).add_task(add.name, args=(1, 2)).status().value, flush=True)
except Exception as exc:
    print("raised:", type(exc).__name__, flush=True)
print("last line at", time.time(), flush=True)
"""


def _run_script(url: str, mode: str) -> str:
    """Run `_SCRIPT` on `url`; return its output once it has exited, promptly after its last
    line (a thread left running would keep the interpreter from exiting)."""
    run = subprocess.run(
        [sys.executable, "-c", _SCRIPT, url, mode],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    exited = time.time()
    assert run.returncode == 0, run.stderr
    last_line = re.search(r"last line at ([0-9.]+)", run.stdout)
    assert last_line is not None, run.stdout + run.stderr
    assert exited - float(last_line[1]) < EXIT_AFTER_LAST_LINE_S, run.stdout
    return run.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "url",
    [
        pytest.param(lambda: f"redis://127.0.0.1:{free_port()}/0", id="redis-down"),
        pytest.param(
            lambda: f"postgresql://taskflow@127.0.0.1:{free_port()}/nobody", id="postgres-down"
        ),
    ],
)
def test_a_script_whose_first_blocking_call_fails_exits(url: Callable[[], str]) -> None:
    assert "raised:" in _run_script(url(), "first")


@pytest.mark.slow
def test_a_script_that_closed_its_app_sends_again_and_exits(backend_url: str) -> None:
    assert "sent: queued" in _run_script(backend_url, "closed")


# -- the memory backend: only a worker of this process can run a task ----------------------------


async def test_result_on_the_memory_backend_says_that_no_worker_runs_here() -> None:
    app, add = make_app("memory://")
    handle = await add.add_task(1, 2)
    no_worker = r"no worker is running in this process for queue 'default'.*app\.running\(\)"
    with pytest.raises(TimeoutError, match=no_worker):
        await handle.result(timeout=0.01)
    async with app.running():
        later = await add.options(delay=3600).add_task(1, 2)
        with pytest.raises(TimeoutError, match="keeps running"):  # a worker will run it
            await later.result(timeout=0.01)
    with pytest.raises(TimeoutError, match=no_worker):  # that worker has stopped
        await later.result(timeout=0.01)
    await app.close()
