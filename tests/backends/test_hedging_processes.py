"""A hedged straggler with real worker processes (the ``taskflow worker`` CLI) on Redis and
PostgreSQL: the worker running the straggler starts a copy once a second worker is live, the
second worker runs it, and the race has one outcome, the loser's run being stopped.

* copy wins: the task's own run hangs; the copy's outcome ends the task ("won by copy"), and the
  hanging run is stopped when its worker finds its lease lost;
* task wins: the copy hangs; the task's outcome ends it, and the running copy is cancelled
  (its worker sees CANCEL; the copy ends Superseded).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflow import Hedge, QueueTasks, TaskStatus
from taskflow._hedging import HEDGE_KEY
from taskflow._ids import derived_task_id
from taskflow.abc import SUPERSEDED, EventKind
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
from tests.services import wait_until

pytestmark = pytest.mark.slow

APP = """
import asyncio
import os

from taskflow import GlobalConfig, Hedge, QueueTasks, TaskContext

app = QueueTasks(
    name="cli-test",
    broker=os.environ["TF_URL"],
    config=GlobalConfig(lease_s=2.0, heartbeat_s=0.3, shutdown_grace_s=1.0),
)


def note(line: str) -> None:
    fd = os.open(os.environ["RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


def is_first() -> bool:
    try:
        os.close(os.open(os.environ["FIRST"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


@app.task(hedge=Hedge(after=1.0))
async def report(ctx: TaskContext, winner: str) -> str:
    first = is_first()
    note(f"start {ctx.task_id}")
    print("STARTED", ctx.task_id, flush=True)
    if first == (winner == "copy"):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            note(f"stopped {ctx.task_id}")
            raise
    while winner == "task" and len(open(os.environ["RUNS"]).read().splitlines()) < 2:
        await asyncio.sleep(0.05)  # the task waits until its copy runs, then wins
    return f"from {ctx.task_id}"
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


def _app(url: str) -> QueueTasks:
    app = QueueTasks(name="cli-test", broker=url)

    @app.task(name="report", hedge=Hedge(after=1.0))
    def report(winner: str) -> str:  # pragma: no cover - run by the workers' app
        raise AssertionError("sent from here, run by the workers")

    return app


def _send(url: str, winner: str) -> str:
    async def send() -> str:
        app = _app(url)
        async with app:
            return (await app.add_task("report", args=(winner,))).task_id

    return asyncio.run(send())


def _result_and_events(url: str, task_id: str) -> tuple[object, list[tuple[EventKind, str | None]]]:
    async def read() -> tuple[object, list[tuple[EventKind, str | None]]]:
        app = _app(url)
        async with app:
            result = await app.result(task_id).result(timeout=30)
            events = await app.storage.read_events("default", limit=10_000)
        return result, [(e.kind, e.detail) for e in events if e.task_id == task_id]

    return asyncio.run(read())


@pytest.mark.parametrize("winner", ["copy", "task"])
def test_a_hedged_straggler_has_one_outcome_and_its_loser_is_stopped(
    tmp_path: Path, url: str, winner: str
) -> None:
    target = write_app(tmp_path, "hedged", APP)
    runs = tmp_path / "runs.log"
    env = env_for(tmp_path, TF_URL=url, RUNS=str(runs), FIRST=str(tmp_path / "first"))
    first = _worker(tmp_path, target, env)
    second: subprocess.Popen[str] | None = None
    try:
        task_id = _send(url, winner)
        wait_for_line(first, f"STARTED {task_id}")
        second = _worker(tmp_path, target, env)  # now there is another live worker
        copy_id = derived_task_id(task_id, HEDGE_KEY, "default")
        result, events = _result_and_events(url, task_id)
        loser = task_id if winner == "copy" else copy_id
        wait_until(
            lambda: f"stopped {loser}" in runs.read_text(),
            deadline_s=15,
            failure=f"the losing run ({loser}) was never stopped:\n{runs.read_text()}",
        )
    finally:
        kill_group(first)
        if second is not None:
            kill_group(second)

    won = copy_id if winner == "copy" else task_id
    assert result == f"from {won}"
    assert sorted(runs.read_text().splitlines()) == sorted(
        [f"start {task_id}", f"start {copy_id}", f"stopped {loser}"]
    )
    record, copy = read_record(url, task_id), read_record(url, copy_id)
    assert record is not None and copy is not None
    assert record.status is TaskStatus.DONE
    assert (EventKind.HEDGED, copy_id) in events
    assert sum(kind is EventKind.DONE for kind, _ in events) == 1
    if winner == "copy":
        assert (EventKind.DONE, f"won by copy {copy_id}") in events
        assert copy.status is TaskStatus.DONE
    else:
        assert copy.status is TaskStatus.CANCELLED
        assert copy.error is not None and copy.error.type == SUPERSEDED
