"""``ctx.chunks`` across a crash, with real worker processes on Redis and PostgreSQL.

A worker runs an export of 100 rows in chunks of 10 and is SIGKILLed in the middle of its fifth
chunk. Once the lease lapses a second worker re-runs the task: it must start at the fifth chunk
(the first not recorded done), never process the four before it again, and its progress must go
on from 40 of 100, as ``taskflow status --watch`` shows while it runs.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflow import QueueTasks, TaskStatus
from taskflow.abc import EventKind
from tests.cli_support import (
    drop_shared,
    env_for,
    kill_group,
    read_record,
    read_rest,
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


@app.task(retries=3)
async def export(ctx: TaskContext, rows: int, size: int) -> int:
    chunks = ctx.chunks(range(rows), size=size, message="loaded {done} of {total}")
    async for chunk in chunks:
        fd = os.open(os.environ["RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{ctx.attempt} {chunk.start} {chunks.done_rows}\\n".encode())
        finally:
            os.close(fd)
        if os.environ.get("HANG_AT") == str(chunk.start):
            print("HANGING in chunk", chunk.start, flush=True)
            await asyncio.sleep(3600)
        await asyncio.sleep(float(os.environ.get("CHUNK_S", "0")))
    return chunks.done_rows
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


def _send_export(url: str, rows: int, size: int) -> str:
    """Send the app's ``export`` (with its retries: the producer's options travel with it)."""

    async def send() -> str:
        app = QueueTasks(name="cli-test", broker=url)

        @app.task(name="export", retries=3)
        def export(rows: int, size: int) -> int:  # pragma: no cover - run by the workers' app
            raise AssertionError("sent from here, run by the workers")

        async with app:
            return (await export.add_task(rows, size)).task_id

    return asyncio.run(send())


def _events_of(url: str, task_id: str) -> list[tuple[EventKind, int, str | None]]:
    async def read() -> list[tuple[EventKind, int, str | None]]:
        app = QueueTasks(name="cli-test", broker=url)
        async with app:
            events = await app.storage.read_events("default", limit=10_000)
        return [(e.kind, e.attempt, e.detail) for e in events if e.task_id == task_id]

    return asyncio.run(read())


def test_a_rerun_after_sigkill_resumes_at_the_first_unfinished_chunk(
    tmp_path: Path, url: str
) -> None:
    target = write_app(tmp_path, "exports", APP)
    runs = tmp_path / "runs.log"
    env = env_for(tmp_path, TF_URL=url, RUNS=str(runs))
    first = _worker(tmp_path, target, {**env, "HANG_AT": "40"})
    try:
        task_id = _send_export(url, 100, 10)
        wait_for_line(first, "HANGING in chunk 40")
        watch = start_cli(tmp_path, "status", target, task_id, "--watch", env=env)
        kill_group(first)  # SIGKILL mid-chunk: chunks 0..30 are recorded, 40 is not
        second = _worker(tmp_path, target, {**env, "CHUNK_S": "0.3"})
        try:
            seen: list[str] = []
            assert read_rest(watch, seen) == 0, "\n".join(seen)
        finally:
            kill_group(second)
    finally:
        kill_group(first)

    record = read_record(url, task_id)
    assert record is not None
    assert record.status is TaskStatus.DONE, record
    assert record.attempts == 2
    lines = [tuple(map(int, line.split())) for line in runs.read_text().splitlines()]
    # attempt, first row of the chunk, rows recorded done before it
    assert lines == [
        *((1, start, start) for start in range(0, 50, 10)),
        *((2, start, start) for start in range(40, 100, 10)),
    ]
    assert record.progress is not None
    assert (record.progress.done, record.progress.total) == (100, 100)
    assert record.progress.message == "loaded 100 of 100"

    # The re-run's progress goes on from 40: none of its reports says less.
    second_run = [
        int(detail.split("/")[0])
        for kind, attempt, detail in _events_of(url, task_id)
        if kind is EventKind.PROGRESS and attempt == 2 and detail
    ]
    assert second_run, "the re-run reported no progress"
    assert min(second_run) >= 40
    assert second_run[-1] == 100

    # `taskflow status --watch` showed it: the rows it showed never went back below 40 once
    # there, and it ended on 100 of 100.
    shown = [int(m.group(1)) for m in re.finditer(r" (\d+)/100 ", "\n".join(seen))]
    assert shown, "\n".join(seen)
    assert any(40 <= n < 100 for n in shown), "\n".join(seen)
    reached_40 = shown.index(next(n for n in shown if n >= 40))
    assert all(n >= 40 for n in shown[reached_40:]), shown
    assert "loaded 100 of 100" in "\n".join(seen)
