"""A declared lock's holder dies: SIGKILL of the worker process running a task that holds a
shared lock, on Redis and PostgreSQL, with two real ``taskflow worker`` processes.

A task that declares the exclusive lock waits, parked, behind the running shared holder. Once
the holder's process is killed nobody releases the lock, so nobody wakes the writer: it must
run once the holder's lock lapses (its lease, ``lease_s`` after the last renewal), through the
parked task's safety-net claim, and never before. The killed export is re-delivered after its
own lease and, finding the writer ahead of it, waits its turn and runs after it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from taskflow import QueueTasks, TaskStatus
from tests.services import poll_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

LEASE_S = 2.0

APP = textwrap.dedent(
    f"""
    import asyncio
    import os
    import time

    from taskflow import Exclusive, GlobalConfig, QueueTasks, Shared, TaskContext

    app = QueueTasks(
        name="lockcrash",
        broker=os.environ["LOCK_CRASH_URL"],
        config=GlobalConfig(
            lease_s={LEASE_S}, heartbeat_s=0.5, idle_poll_s=0.5, shutdown_grace_s=1.0
        ),
    )
    LOG = os.environ["LOCK_CRASH_LOG"]


    def log(what: str, ctx: TaskContext) -> None:
        line = f"{{what}} {{ctx.task_id}} {{ctx.attempt}} {{os.getpid()}} {{time.time():.6f}}\\n"
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


    @app.task(locks=[Shared("dwh.sales")], retries=3)
    async def export(ctx: TaskContext) -> str:
        log("export", ctx)
        if ctx.attempt == 1:
            await asyncio.sleep(60)  # holds the lock until its worker is killed
        return "exported"


    @app.task(locks=[Exclusive("dwh.sales")])
    async def swap(ctx: TaskContext) -> str:
        log("swap", ctx)
        return "swapped"
    """
)


def _load(path: Path) -> ModuleType:
    """The app module at `path`, imported under a name of its own."""
    spec = importlib.util.spec_from_file_location(f"lockcrashapp_{os.urandom(4).hex()}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _start_worker(app_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "taskflow", "--log-level", "WARNING"),
            *("worker", "lockcrashapp:app", "--concurrency", "4"),
        ],
        cwd=app_dir,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _lines(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split() for line in log.read_text().splitlines()]


@pytest.fixture(params=["redis", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    """A URL of the kind's test server in a namespace of the test's own."""
    value: str = request.getfixturevalue(f"backend_url_{request.param}")
    return value


async def test_a_killed_shared_holder_lets_the_waiting_writer_run_after_its_lease(
    url: str, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    env = {**os.environ, "LOCK_CRASH_URL": url, "LOCK_CRASH_LOG": str(log)}
    (tmp_path / "lockcrashapp.py").write_text(APP)
    os.environ.update(LOCK_CRASH_URL=url, LOCK_CRASH_LOG=str(log))
    try:
        module = _load(tmp_path / "lockcrashapp.py")
    finally:
        for key in ("LOCK_CRASH_URL", "LOCK_CRASH_LOG"):
            os.environ.pop(key, None)
    app: QueueTasks = module.app
    workers = [_start_worker(tmp_path, env) for _ in range(2)]
    try:
        async with app:
            await _kill_the_holder_and_check(app, module, log, workers)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _kill_the_holder_and_check(
    app: QueueTasks, module: object, log: Path, workers: list[subprocess.Popen[bytes]]
) -> None:
    coordination = app.broker.coordination
    exporting = await module.export.add_task()  # type: ignore[attr-defined]
    await poll_until(lambda: any(line[0] == "export" for line in _lines(log)), deadline_s=30)
    holder_pid = int(next(line for line in _lines(log) if line[0] == "export")[3])
    swapping = await module.swap.add_task()  # type: ignore[attr-defined]

    async def writer_parked() -> bool:
        """The writer waits in the lock's queue, and in the broker (given back: no slot)."""
        states = await coordination.lock_states(["dwh.sales"], now=app.clock.time())
        queued = any(w.owner == swapping.task_id for s in states for w in s.waiters)
        return queued and await swapping.status() is TaskStatus.SCHEDULED

    await poll_until(writer_parked, deadline_s=30)  # another process's state

    os.kill(holder_pid, signal.SIGKILL)
    [victim] = [proc for proc in workers if proc.pid == holder_pid]
    victim.wait(10)
    # Nobody renews the lock now: its holder's last expiry is when the writer may run.
    [state] = await coordination.lock_states(["dwh.sales"], now=app.clock.time())
    [holder] = state.holders
    assert holder.owner == exporting.task_id

    assert await swapping.result(timeout=30) == "swapped"
    assert await exporting.result(timeout=30) == "exported"
    runs = _lines(log)
    [swap_run] = [line for line in runs if line[0] == "swap"]
    assert float(swap_run[4]) >= holder.expires_at  # not before the holder's lock lapsed
    second_export = [line for line in runs if line[0] == "export" and line[2] == "2"]
    assert second_export and float(second_export[0][4]) >= float(swap_run[4])
