"""Crash and reconnect tests of the Redis backend with real workers.

* Crash: 2,000 tasks that each count their runs in a Redis hash, served by two ``taskflow
  worker`` processes; one of them is SIGKILLed mid-run three times and restarted. Every task must
  end DONE with exactly one terminal event, none lost; the number of duplicate runs (tasks whose
  body ran again after their worker died) is printed and kept as a test property.
* Hand-off: tasks handed to a parked worker by the enqueue itself survive that worker's
  SIGKILL (re-delivered once their lease lapses), and the dead worker gets no more.
* Reconnect: an in-process worker keeps going while the server kills every client connection
  (normal and pub/sub) several times mid-run; every task still completes.

Both use a private ``redis-server`` (free port), so killing connections touches no one else.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import anyio
import pytest
import redis.asyncio as aioredis

from taskflow import GlobalConfig, QueueTasks
from taskflow.abc import EventKind, TaskStatus
from taskflow.redis import RedisBroker, from_url
from tests.plugins.backend_redis import random_prefix
from tests.services import free_port, redis_url, start_redis_server, stop_process

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TASKS = 2_000
KILLS = 3
TERMINAL_KINDS = {EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED, EventKind.EXPIRED}

APP_MODULE = textwrap.dedent(
    """
    import asyncio
    import os

    import redis.asyncio as aioredis

    from taskflow import GlobalConfig, QueueTasks
    from taskflow.redis import from_url

    URL = os.environ["CRASH_REDIS_URL"]
    PREFIX = os.environ["CRASH_PREFIX"]
    app = QueueTasks(
        name="crash",
        broker=from_url(URL, prefix=PREFIX),
        config=GlobalConfig(lease_s=2.0, heartbeat_s=0.5, idle_poll_s=0.5, shutdown_grace_s=1.0),
    )
    _client = None


    @app.task(retries=10)
    async def record(i: int) -> int:
        global _client
        if _client is None:
            _client = aioredis.Redis.from_url(URL)
        async with _client.pipeline(transaction=False) as pipe:
            pipe.hincrby(PREFIX + ":runs", str(i), 1)
            pipe.hincrby(PREFIX + ":by_pid", str(os.getpid()), 1)
            await pipe.execute()
        await asyncio.sleep(0.02)
        return i


    @app.task(retries=10)
    async def hold(i: int, wait: bool) -> int:
        # With `wait`, the first run holds its slot (until its worker is killed); later runs end.
        global _client
        if _client is None:
            _client = aioredis.Redis.from_url(URL)
        runs = await _client.hincrby(PREFIX + ":held", str(i), 1)
        if wait and runs == 1:
            await asyncio.sleep(60)
        return i
    """
)


@pytest.fixture
def private_redis() -> Iterator[str]:
    redis_url()  # skip (or fail) with the usual reason if Redis is not available
    port = free_port()
    proc = start_redis_server(port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)


def _start_worker(app_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "taskflow", "--log-level", "WARNING"),
            *("worker", "crashapp:app", "--concurrency", "20"),
        ],
        cwd=app_dir,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM the workers still running, then wait for each (SIGKILL after 15 s)."""
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in workers:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _runs_total(client: aioredis.Redis, key: str) -> int:
    values = await client.hvals(key)
    return sum(int(v) for v in values)


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"crashapp_{os.urandom(4).hex()}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(180)  # longer than the default: its own deadline is 120 s
async def test_sigkilled_workers_lose_nothing(
    private_redis: str,
    tmp_path: Path,
    record_property: pytest.RecordProperty,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = random_prefix()
    (tmp_path / "crashapp.py").write_text(APP_MODULE)
    monkeypatch.setenv("CRASH_REDIS_URL", private_redis)
    monkeypatch.setenv("CRASH_PREFIX", prefix)
    env = dict(os.environ)
    crashapp = _load_module(tmp_path / "crashapp.py")  # the producer uses the same app

    app: QueueTasks = crashapp.app
    workers: list[subprocess.Popen[bytes]] = []
    async with app, aioredis.Redis.from_url(private_redis) as client:
        handles = await app.add_tasks([crashapp.record.prepare(i) for i in range(TASKS)])
        try:
            workers = [_start_worker(tmp_path, env), _start_worker(tmp_path, env)]
            with anyio.fail_after(120):
                for kill in range(KILLS):
                    # Let the victim get going, then kill it while it runs tasks.
                    victim = workers[0]
                    target = (kill + 1) * TASKS // (KILLS + 2)
                    while (
                        await _runs_total(client, f"{prefix}:runs") < target
                        or int(await client.hget(f"{prefix}:by_pid", str(victim.pid)) or 0) < 50
                    ):
                        await anyio.sleep(0.02)  # real processes: poll the shared counters
                    os.kill(victim.pid, signal.SIGKILL)
                    victim.wait()
                    workers[0] = _start_worker(tmp_path, env)
                records = [
                    await h.app.storage.wait(h.task_id, timeout=None, now=0) for h in handles
                ]
        finally:
            _stop_workers(workers)

        assert [r.status for r in records] == [TaskStatus.DONE] * TASKS
        runs = {int(k): int(v) for k, v in (await client.hgetall(f"{prefix}:runs")).items()}
        assert set(runs) == set(range(TASKS)), "a task never ran"
        events = await app.storage.read_events("default", limit=1_000_000)
        terminal = Counter(e.task_id for e in events if e.kind in TERMINAL_KINDS)
        assert set(terminal) == {h.task_id for h in handles}
        assert set(terminal.values()) == {1}, "a task has more than one terminal outcome"
        [stats] = await app.broker.stats(["default"], now=time.time())
        assert (stats.queued, stats.scheduled, stats.running, stats.dead) == (0, 0, 0, 0)
        duplicates = sum(runs.values()) - TASKS
        record_property("duplicate_runs", duplicates)
        print(f"\ncrash test: {TASKS} tasks, {KILLS} SIGKILLs, {duplicates} duplicate runs")


@pytest.mark.timeout(120)  # longer than the default: its own deadline is 60 s
async def test_tasks_handed_to_a_worker_that_is_then_killed_are_not_lost(
    private_redis: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks sent to an idle (parked) worker are claimed for it by the enqueue itself; after a
    SIGKILL mid-task they are re-delivered to another worker once their lease lapses, and a
    task sent after the kill is not handed to the dead worker but queued for the living."""
    prefix = random_prefix()
    (tmp_path / "crashapp.py").write_text(APP_MODULE)
    monkeypatch.setenv("CRASH_REDIS_URL", private_redis)
    monkeypatch.setenv("CRASH_PREFIX", prefix)
    env = dict(os.environ)
    crashapp = _load_module(tmp_path / "crashapp.py")
    app: QueueTasks = crashapp.app
    assert isinstance(app.broker, RedisBroker)
    park = app.broker.storage.qkey("default", "park")
    workers: list[subprocess.Popen[bytes]] = []
    async with app, aioredis.Redis.from_url(private_redis) as client:
        try:
            workers.append(_start_worker(tmp_path, env))
            with anyio.fail_after(60):
                # Parked once a claim found the queue dry with its subscription confirmed.
                while not await client.hlen(park):
                    await crashapp.record.add_task(-2)  # wakes it: each claim may park it
                    await anyio.sleep(0.05)  # a real process: poll the shared state
                victim_id = (await client.hkeys(park))[0].decode()
                handles = [await crashapp.hold.add_task(i, True) for i in range(5)]
                for h in handles:  # claimed for the parked worker in the enqueue itself
                    record = await app.storage.get(h.task_id, now=time.time())
                    assert record is not None and record.status is TaskStatus.RUNNING
                    assert record.worker_id == victim_id
                while await client.hlen(f"{prefix}:held") < 5:
                    await anyio.sleep(0.02)
                os.kill(workers[0].pid, signal.SIGKILL)
                workers[0].wait()
                late = await crashapp.hold.add_task(5, False)  # the dead worker is still parked
                record = await app.storage.get(late.task_id, now=time.time())
                assert record is not None and record.status is TaskStatus.QUEUED
                assert not await client.hexists(park, victim_id)
                workers.append(_start_worker(tmp_path, env))
                results = [await h.result() for h in [*handles, late]]
        finally:
            _stop_workers(workers)
        assert results == list(range(6))
        held = {int(k): int(v) for k, v in (await client.hgetall(f"{prefix}:held")).items()}
        assert held == {0: 2, 1: 2, 2: 2, 3: 2, 4: 2, 5: 1}
        events = await app.storage.read_events("default", limit=100_000)
        ids = {h.task_id for h in [*handles, late]}
        terminal = Counter(
            e.task_id for e in events if e.kind in TERMINAL_KINDS and e.task_id in ids
        )
        assert terminal == Counter(ids)


@pytest.mark.timeout(120)  # longer than the default: its own deadline is 60 s
async def test_worker_carries_on_when_its_connections_are_killed(private_redis: str) -> None:
    app = QueueTasks(
        name="reconnect",
        broker=from_url(private_redis, prefix=random_prefix()),
        config=GlobalConfig(lease_s=5.0, heartbeat_s=1.0, idle_poll_s=0.5),
    )

    @app.task
    async def slow_echo(i: int) -> int:
        await anyio.sleep(0.01)
        return i

    port = int(private_redis.rsplit(":", 1)[1].split("/")[0])
    async with aioredis.Redis(port=port) as admin:
        with anyio.fail_after(60):
            async with app.running(concurrency=20):
                handles = await app.add_tasks([slow_echo.prepare(i) for i in range(500)])
                for _ in range(3):
                    await anyio.sleep(0.1)  # mid-run, on a real server: let work happen
                    await admin.client_kill_filter(_type="normal", skipme=True)
                    await admin.client_kill_filter(_type="pubsub", skipme=True)
                results = [await h.result(timeout=30) for h in handles]
    assert results == list(range(500))


async def test_idle_worker_wakes_for_a_delayed_task_without_waiting_for_its_backstop(
    private_redis: str,
) -> None:
    """Enqueueing a delayed task wakes idle workers, which then sleep only until it is due."""
    app = QueueTasks(
        name="delayed",
        broker=from_url(private_redis, prefix=random_prefix()),
        config=GlobalConfig(idle_poll_s=30.0),
    )

    @app.task
    async def stamp() -> float:
        return time.monotonic()

    async with app.running(concurrency=2):
        await anyio.wait_all_tasks_blocked()  # the worker is idle, waiting for work
        sent = time.monotonic()
        handle = await stamp.options(delay=0.2).add_task()
        with anyio.fail_after(10):
            ran = await handle.result(timeout=10)
    assert 0.15 <= ran - sent < 5.0  # due after 0.2 s; far sooner than the 30 s backstop
