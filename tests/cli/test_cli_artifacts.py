"""``taskflow artifacts`` as a real process on Redis and PostgreSQL: it lists a task's artifacts
(text and ``--json``), fetches one into a file (a complete fetch: a ``delete_after_fetch`` one
is deleted then), and ends with one line and its own exit status for what cannot be done.

The test process runs the task in an app of its own on the same backend and the same artifact
directory as the command's app, so both see one set of artifacts.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskflow import QueueTasks, TaskContext
from taskflow.cli import ExitCode
from tests.cli_support import drop_shared, env_for, run_cli, shared_url, write_app

pytestmark = pytest.mark.slow

APP = """
import os

from taskflow import QueueTasks

app = QueueTasks(name="cli-art", broker=os.environ["TF_URL"], artifacts=os.environ["TF_STORE"])
"""


@pytest.fixture(params=["redis", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    value = shared_url(request.param)
    try:
        yield value
    finally:
        drop_shared(value)


def produce(url: str, store: Path) -> str:
    """Run a task that puts two artifacts; returns its id."""
    app = QueueTasks(name="cli-art", broker=url, artifacts=store)

    @app.task
    async def export(ctx: TaskContext) -> None:
        await ctx.artifacts.put("sales.csv", b"a,b\n1,2\n")
        await ctx.artifacts.put("once.txt", b"just once", delete_after_fetch=True)

    async def run() -> str:
        async with app.running(concurrency=1):
            handle = await export.add_task()
            await handle.result(timeout=30)
            return handle.task_id

    return asyncio.run(run())


@pytest.fixture
def cli(tmp_path: Path, url: str) -> Any:
    store = tmp_path / "store"
    target = write_app(tmp_path, "exports", APP)
    env = env_for(tmp_path, TF_URL=url, TF_STORE=str(store))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(tmp_path, "artifacts", target, *args, env=env)

    run.task_id = produce(url, store)  # type: ignore[attr-defined]
    return run


def test_the_command_lists_fetches_and_says_what_is_gone(cli: Any, tmp_path: Path) -> None:
    task_id = cli.task_id
    listed = cli(task_id, "--json")
    assert listed.returncode == ExitCode.OK, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["name"], r["size"], r["state"]) for r in rows] == [
        ("once.txt", 9, "ready"),
        ("sales.csv", 8, "ready"),
    ]
    text = cli(task_id)
    assert "sales.csv  8 bytes" in text.stdout and "expires" in text.stdout

    fetched = cli(task_id, "--fetch", "once.txt", "-o", str(tmp_path / "once.txt"))
    assert fetched.returncode == ExitCode.OK, fetched.stderr
    assert (tmp_path / "once.txt").read_bytes() == b"just once"
    again = cli(task_id, "--fetch", "once.txt", "-o", str(tmp_path / "again.txt"))
    assert again.returncode == ExitCode.ARTIFACT_NOT_FOUND
    assert again.stderr.count("\n") == 1 and "deleted at" in again.stderr
    assert not (tmp_path / "again.txt").exists()

    to_stdout = cli(task_id, "--fetch", "sales.csv", "-o", "-")
    assert to_stdout.stdout == "a,b\n1,2\n"

    bad_name = cli(task_id, "--fetch", "../etc/passwd", "-o", str(tmp_path / "x"))
    assert bad_name.returncode == ExitCode.USAGE and "path separator" in bad_name.stderr
    no_output = cli(task_id, "--fetch", "sales.csv")
    assert no_output.returncode == ExitCode.USAGE and "needs -o PATH" in no_output.stderr
    unknown = cli("no-such-task")
    assert unknown.returncode == ExitCode.NOT_FOUND and "no task with id" in unknown.stderr
