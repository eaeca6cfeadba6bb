"""`taskflow worker` as a real process: stop signals to a whole process group, restarts of
crashing worker processes, and what the worker says about itself.

Every test starts real processes on the shared Redis server (a key prefix of its own), signals
them as a terminal, `timeout` or systemd would, and waits on their output lines with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflow import TaskStatus
from tests.cli_support import (
    drop_shared,
    enqueue,
    env_for,
    kill_group,
    read_record,
    read_rest,
    run_cli,
    start_cli,
    wait_for_line,
    write_app,
)
from tests.cli_support import shared_url as make_shared_url

pytestmark = pytest.mark.slow

STEPS_APP = """
import os

import anyio

from taskflow import GlobalConfig, QueueTasks, TaskContext

app = QueueTasks(
    name="cli-test", broker=os.environ["TF_URL"], config=GlobalConfig(shutdown_grace_s=60)
)


@app.task
async def steps(ctx: TaskContext, n: int, step_s: float) -> str:
    print(f"task started attempt={ctx.attempt}", flush=True)
    for i in range(n):
        await anyio.sleep(step_s)
        ctx.progress(i + 1, n)
    print("task finished", flush=True)
    return "ok"
"""


@pytest.fixture
def redis_app_url() -> Iterator[str]:
    url = make_shared_url("redis")
    try:
        yield url
    finally:
        drop_shared(url)


def _start_group_worker(
    tmp_path: Path, url: str, *args: str
) -> tuple[subprocess.Popen[str], list[str]]:
    target = write_app(tmp_path, "steps_app", STEPS_APP)
    proc = start_cli(
        tmp_path,
        "worker",
        target,
        "--processes",
        "2",
        "--concurrency",
        "1",
        *args,
        new_session=True,
        env=env_for(tmp_path, TF_URL=url),
    )
    return proc, wait_for_line(proc, "task started")


def test_one_ctrl_c_to_the_process_group_drains_gracefully(
    tmp_path: Path, redis_app_url: str
) -> None:
    """The terminal signals every process of the group and the parent forwards the signal
    too: each child gets two copies at once, and must still drain (finish its task)."""
    task_id = enqueue(redis_app_url, "steps", 6, 0.25)
    proc, seen = _start_group_worker(tmp_path, redis_app_url)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        status = read_rest(proc, seen)
    finally:
        kill_group(proc)
    output = "\n".join(seen)
    assert status == 0, output
    assert "task finished" in output, output
    assert "stopping now" not in output, output
    record = read_record(redis_app_url, task_id)
    assert record is not None
    assert record.status is TaskStatus.DONE, (record, output)
    assert record.attempts == 1, output


MEMORY_APP = """
from taskflow import QueueTasks

app = QueueTasks(name="cli-test")
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_that_comes_while_the_worker_starts_is_a_graceful_stop(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """The signal arrives before the worker listens for it (it stays pending: the process
    starts with it blocked). It must neither be lost (a worker that runs on) nor kill the
    process: it is held until the watcher listens, then stops the worker gracefully."""
    target = write_app(tmp_path, "memory_app", MEMORY_APP)
    proc = start_cli(tmp_path, "worker", target, stop_signals_blocked=True)
    try:
        proc.send_signal(signum)
        status = read_rest(proc, seen := [])
    finally:
        kill_group(proc)
    output = "\n".join(seen)
    assert status == 0, output
    assert f"received {signum.name}: stopping gracefully" in output, output


def test_a_second_signal_a_second_later_stops_at_once(tmp_path: Path, redis_app_url: str) -> None:
    """A person pressing Ctrl-C again (a second or more later) means "stop now": the running
    task is released for another worker instead of being waited for."""
    task_id = enqueue(redis_app_url, "steps", 1, 600.0)
    proc, seen = _start_group_worker(tmp_path, redis_app_url)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        wait_for_line(proc, "waiting up to", seen)
        # The gap is the behaviour under test (a person's second Ctrl-C), not synchronization.
        time.sleep(1.2)
        os.killpg(proc.pid, signal.SIGTERM)
        status = read_rest(proc, seen, timeout=20)
    finally:
        kill_group(proc)
    output = "\n".join(seen)
    assert status == 0, output
    assert "stopping now" in output, output
    assert "task finished" not in output, output
    record = read_record(redis_app_url, task_id)
    assert record is not None
    assert record.status is TaskStatus.QUEUED, (record, output)
    assert record.attempts == 0, output  # released: the attempt was refunded


CRASHING_APP = """
import os

from taskflow import QueueTasks

app = QueueTasks(name="cli-test", broker=os.environ["TF_URL"])


@app.on_startup
async def connect(state) -> None:
    print(f"startup hook ran in {os.getpid()}", flush=True)
    raise RuntimeError("the database is down")
"""


@pytest.mark.timeout(120)  # longer than the default: its process's deadline is 60 s
def test_crashing_worker_processes_are_restarted_with_backoff_then_given_up(
    tmp_path: Path, redis_app_url: str
) -> None:
    target = write_app(tmp_path, "crash_app", CRASHING_APP)
    started = time.monotonic()
    done = run_cli(
        tmp_path,
        "worker",
        target,
        "--processes",
        "2",
        env=env_for(tmp_path, TF_URL=redis_app_url),
        timeout=60,
    )
    took = time.monotonic() - started
    starts = done.stdout.count("startup hook ran")
    assert done.returncode == 6, done.stderr
    # Five fast failures in a row of one process stop the whole worker; the other process
    # restarted on the same schedule.
    assert 5 <= starts <= 10, done.stdout
    # Backoff 0.25, 0.5, 1 and 2 s between the five starts of one process.
    assert took >= 3.7, (took, done.stdout)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("taskflow: "), done.stderr
    assert "5 times in a row" in last, last
    assert "Traceback" not in done.stderr


def test_a_worker_process_that_dies_is_replaced(tmp_path: Path, redis_app_url: str) -> None:
    target = write_app(tmp_path, "steps_app2", STEPS_APP)
    proc = start_cli(
        tmp_path,
        "worker",
        target,
        "--processes",
        "2",
        new_session=True,
        env=env_for(tmp_path, TF_URL=redis_app_url),
    )
    seen: list[str] = []
    try:
        wait_for_line(proc, "worker processes:", seen)
        pids = [int(p) for p in seen[-1].rsplit(":", 1)[1].split(",")]
        os.kill(pids[0], signal.SIGKILL)
        wait_for_line(proc, f"worker process {pids[0]} died", seen)
        line = wait_for_line(proc, "ready", seen)[-1]
        while any(f":{pid}:" in line for pid in pids):  # an original child's ready line
            line = wait_for_line(proc, "ready", seen)[-1]
        proc.send_signal(signal.SIGTERM)
        status = read_rest(proc, seen)
    finally:
        kill_group(proc)
    assert status == 0, "\n".join(seen)
