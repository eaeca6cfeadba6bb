"""``ctx.step`` across a crash, with real worker processes on Redis and PostgreSQL.

A worker runs a report of three steps and is SIGKILLed inside its second. Once the lease lapses
a second worker re-runs the task: it must skip the first step (its recorded value coming back),
run the second again from its start (it was interrupted, so never recorded), then the third.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflow import QueueTasks, TaskStatus
from tests.cli_support import (
    drop_shared,
    env_for,
    kill_group,
    read_record,
    shared_url,
    start_cli,
    wait_for_line,
    write_app,
)

pytestmark = pytest.mark.slow

APP = """
import asyncio
import os

from taskflow import GlobalConfig, QueueTasks, TaskContext

app = QueueTasks(
    name="cli-test",
    broker=os.environ["TF_URL"],
    config=GlobalConfig(lease_s=2.0, heartbeat_s=0.5, shutdown_grace_s=1.0),
)


def note(ctx: TaskContext, what: str) -> None:
    fd = os.open(os.environ["RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{ctx.attempt} {what}\\n".encode())
    finally:
        os.close(fd)


@app.task(retries=3)
async def report(ctx: TaskContext, day: str) -> list[object]:
    async def download() -> dict[str, object]:
        note(ctx, "download")
        return {"day": day, "rows": 3}

    async def aggregate(rows: int) -> int:
        note(ctx, "aggregate")
        if os.environ.get("HANG") == "aggregate":
            print("HANGING in aggregate", flush=True)
            await asyncio.sleep(3600)
        return rows * 10

    async def publish(total: int) -> str:
        note(ctx, "publish")
        return f"{day}: {total}"

    got = await ctx.step("download", download)
    total = await ctx.step("aggregate", aggregate, got["rows"])
    return [got, await ctx.step("publish", publish, total)]
"""


@pytest.fixture(params=["redis", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    value = shared_url(request.param)
    try:
        yield value
    finally:
        drop_shared(value)


def _worker(tmp_path: Path, target: str, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = start_cli(tmp_path, "worker", target, "--concurrency", "2", env=env)
    wait_for_line(proc, " ready: ")
    return proc


def _send_report(url: str, day: str) -> str:
    async def send() -> str:
        app = QueueTasks(name="cli-test", broker=url)

        @app.task(name="report", retries=3)
        def report(day: str) -> list[object]:  # pragma: no cover - run by the workers' app
            raise AssertionError("sent from here, run by the workers")

        async with app:
            return (await report.add_task(day)).task_id

    return asyncio.run(send())


def _result(url: str, task_id: str) -> object:
    async def read() -> object:
        app = QueueTasks(name="cli-test", broker=url)
        async with app:
            return await app.result(task_id).result(timeout=30)

    return asyncio.run(read())


def test_a_rerun_after_sigkill_inside_a_step_resumes_at_that_step(tmp_path: Path, url: str) -> None:
    target = write_app(tmp_path, "reports", APP)
    runs = tmp_path / "runs.log"
    env = env_for(tmp_path, TF_URL=url, RUNS=str(runs))
    first = _worker(tmp_path, target, {**env, "HANG": "aggregate"})
    try:
        task_id = _send_report(url, "2026-12-05")
        wait_for_line(first, "HANGING in aggregate")
        kill_group(first)  # SIGKILL inside "aggregate": "download" is recorded, it is not
        second = _worker(tmp_path, target, env)
        try:
            result = _result(url, task_id)
        finally:
            kill_group(second)
    finally:
        kill_group(first)

    assert result == [{"day": "2026-12-05", "rows": 3}, "2026-12-05: 30"]
    record = read_record(url, task_id)
    assert record is not None
    assert record.status is TaskStatus.DONE, record
    assert record.attempts == 2
    assert runs.read_text().splitlines() == [
        "1 download",
        "1 aggregate",
        "2 aggregate",
        "2 publish",
    ]
