"""``taskflow workers`` and ``taskflow errors`` against Redis and PostgreSQL, with real worker
processes: workers show up, one SIGKILLed drops out once its entry lapses, one stopped with
SIGTERM at once; failed attempts (a retried one included) as lines and JSON; the errors of
the commands (one line, a distinct exit status)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflow import QueueTasks, WorkerInfo
from taskflow.cli import ExitCode
from tests.cli_support import (
    drop_shared,
    env_for,
    kill_group,
    read_rest,
    run_cli,
    shared_url,
    start_cli,
    wait_for_line,
    write_app,
)
from tests.services import wait_until

pytestmark = pytest.mark.slow

APP = """
import os

from taskflow import QueueTasks, TaskContext

app = QueueTasks(name="cli-test", broker=os.environ["TF_URL"])


@app.task(retries=1, retry_backoff=0)
async def flaky(ctx: TaskContext, n: int) -> int:
    if ctx.attempt == 1:
        raise ValueError(f"first try of {n} fails")
    return n


@app.task
async def broken() -> None:
    raise KeyError("nope")
"""


@pytest.fixture(params=["redis", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    value = shared_url(request.param)
    try:
        yield value
    finally:
        drop_shared(value)


def listed(url: str) -> list[WorkerInfo]:
    async def run() -> list[WorkerInfo]:
        async with QueueTasks(name="cli-test", broker=url) as app:
            return await app.workers()

    return asyncio.run(run())


def test_workers_show_up_and_leave(tmp_path: Path, url: str) -> None:
    target = write_app(tmp_path, "shop", APP)
    # The one to be killed has a 1 s lease (its entry lapses 2 s after its last heartbeat);
    # the one stopped has a long one, so only its own goodbye can remove it quickly.
    doomed = start_cli(
        tmp_path, "worker", target, "--queues", "default,other",
        env=env_for(tmp_path, TF_URL=url, TASKFLOW_LEASE_S="1"),
    )  # fmt: skip
    stopped = start_cli(
        tmp_path, "worker", target, "--concurrency", "3",
        env=env_for(tmp_path, TF_URL=url, TASKFLOW_LEASE_S="600"),
    )  # fmt: skip
    try:
        wait_for_line(doomed, "ready")
        wait_for_line(stopped, "ready")
        entries = listed(url)
        assert sorted(e.pid for e in entries) == sorted([doomed.pid, stopped.pid])
        by_pid = {e.pid: e for e in entries}
        assert by_pid[doomed.pid].queues == ("default", "other")
        assert by_pid[stopped.pid].concurrency == 3

        done = run_cli(tmp_path, "workers", target, env=env_for(tmp_path, TF_URL=url))
        assert done.returncode == ExitCode.OK, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].split()[:3] == ["WORKER", "HOST", "PID"]
        assert sorted(int(line.split()[2]) for line in lines[1:-1]) == sorted(by_pid)
        assert lines[-1] == "2 worker(s), 0 task(s) running"
        done = run_cli(tmp_path, "workers", target, "--json", env=env_for(tmp_path, TF_URL=url))
        docs = [json.loads(line) for line in done.stdout.splitlines()]
        assert sorted(d["pid"] for d in docs) == sorted(by_pid)
        assert all(d["heartbeat_age_s"] < 600 and d["roles"] == [] for d in docs)

        kill_group(doomed)  # SIGKILL: no goodbye; its entry lapses within two leases
        killed_at = time.monotonic()
        wait_until(
            lambda: [e.pid for e in listed(url)] == [stopped.pid],
            deadline_s=10,
            failure="the SIGKILLed worker's entry never lapsed",
        )
        assert time.monotonic() - killed_at < 5

        stopped.send_signal(signal.SIGTERM)
        assert read_rest(stopped, []) == 0
        assert listed(url) == []  # at once: its entry would live 20 minutes more
    finally:
        kill_group(doomed)
        kill_group(stopped)


def run_tasks(url: str) -> list[str]:
    """Run a flaky task (fails, then succeeds) and a broken one in a worker of this process."""
    from importlib import import_module

    async def run() -> list[str]:
        app: QueueTasks = import_module("shop").app
        async with app.running():
            ok = await app.add_task("flaky", args=(7,))
            bad = await app.add_task("broken")
            assert await ok.result(timeout=20) == 7
            with pytest.raises(Exception, match="nope"):
                await bad.result(timeout=20)
            return [ok.task_id, bad.task_id]

    return asyncio.run(run())


def test_errors_lists_every_failed_attempt(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_app(tmp_path, "shop", APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "shop", raising=False)  # this test's module, this URL
    monkeypatch.setenv("TF_URL", url)
    flaky_id, broken_id = run_tasks(url)
    env = env_for(tmp_path, TF_URL=url)

    done = run_cli(tmp_path, "errors", target, "--since", "1h", env=env)
    assert done.returncode == ExitCode.OK, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "2 failed attempt(s)"
    text = "\n".join(lines)
    assert f"broken {broken_id} attempt 1 (failed)" in text
    assert f"flaky {flaky_id} attempt 1 (retried)" in text
    assert "ValueError: first try of 7 fails" in text
    assert "KeyError: 'nope'" in text
    assert 'at File "' in text and "shop.py" in text  # the last frame: the task's line

    done = run_cli(tmp_path, "errors", target, "--task", "flaky", "--json", env=env)
    [doc] = [json.loads(line) for line in done.stdout.splitlines()]
    assert (doc["task_id"], doc["attempt"], doc["retried"]) == (flaky_id, 1, True)
    assert (doc["type"], doc["message"]) == ("ValueError", "first try of 7 fails")
    assert doc["worker_id"] and "shop.py" in doc["last_frame"] and "traceback" not in doc

    done = run_cli(tmp_path, "errors", target, "--task", "broken", "--traceback", env=env)
    assert "Traceback (most recent call last)" in done.stdout

    done = run_cli(tmp_path, "errors", target, "--since", "2099-01-01T00:00", env=env)
    assert done.stdout.strip() == "no failed attempt in the error log"


def test_a_bad_since_is_one_line_and_a_usage_error(tmp_path: Path) -> None:
    target = write_app(tmp_path, "shop", APP)
    env = env_for(tmp_path, TF_URL="redis://127.0.0.1:1/0")
    done = run_cli(tmp_path, "errors", target, "--since", "yesterday", env=env)
    assert done.returncode == ExitCode.USAGE, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("taskflow: --since 'yesterday' is neither")


@pytest.mark.parametrize("command", ["workers", "errors"])
def test_an_unreachable_server_is_one_line(tmp_path: Path, command: str) -> None:
    target = write_app(tmp_path, "shop", APP)
    env = env_for(tmp_path, TF_URL="redis://127.0.0.1:1/0")
    done = run_cli(tmp_path, command, target, env=env)
    assert done.returncode == ExitCode.UNAVAILABLE, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("command", ["workers", "errors"])
def test_a_memory_app_is_not_shared(tmp_path: Path, command: str) -> None:
    target = write_app(tmp_path, "shop", APP)
    done = run_cli(tmp_path, command, target, env=env_for(tmp_path, TF_URL="memory://"))
    assert done.returncode == ExitCode.NOT_SHARED, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert f"`taskflow {command}` cannot reach" in line
