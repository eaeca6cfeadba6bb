"""The `taskflow` commands that read and change tasks, against real worker processes on Redis and
PostgreSQL: send, status (and --watch), cancel, stats, purge, dead-letters, requeue --all.

Each test writes a module with a module-level app on a key prefix (Redis) or schema
(PostgreSQL) of its own, and runs ``python -m taskflow ...`` commands and workers on it.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskflow import TaskStatus
from taskflow.cli import ExitCode
from tests.cli_support import (
    DEADLINE_S,
    drop_shared,
    enqueue,
    env_for,
    kill_group,
    read_record,
    read_rest,
    run_cli,
    shared_url,
    start_cli,
    wait_for_line,
    write_app,
)

pytestmark = pytest.mark.slow

APP = """
import os

import anyio

from taskflow import GlobalConfig, QueueTasks, TaskContext

app = QueueTasks(
    name="cli-test", broker=os.environ["TF_URL"], config=GlobalConfig(shutdown_grace_s=5)
)


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task
async def boom(message: str) -> None:
    raise ValueError(message)


@app.task
async def steps(ctx: TaskContext, n: int, step_s: float) -> str:
    for i in range(n):
        await anyio.sleep(step_s)
        ctx.progress(i + 1, n, f"step {i + 1}")
    return "all done"


@app.task(queue="reports")
async def report() -> None:
    pass
"""


@pytest.fixture(params=["redis", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    value = shared_url(request.param)
    try:
        yield value
    finally:
        drop_shared(value)


@pytest.fixture
def cli(tmp_path: Path, url: str) -> Any:
    """``cli(*args)`` runs a command on the test's app; ``cli.app`` is its MODULE:APP."""
    target = write_app(tmp_path, "shop", APP)
    env = env_for(tmp_path, TF_URL=url)

    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(tmp_path, *[target if a == "APP" else a for a in args], env=env, **kwargs)

    run.app = target  # type: ignore[attr-defined]
    run.env = env  # type: ignore[attr-defined]
    return run


@pytest.fixture
def worker(tmp_path: Path, cli: Any) -> Iterator[subprocess.Popen[str]]:
    """A worker process on the test's app, ready; stopped gracefully afterwards."""
    proc = start_cli(tmp_path, "worker", cli.app, "-q", "default,reports", env=cli.env)
    seen: list[str] = []
    try:
        wait_for_line(proc, " ready: ", seen)
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert read_rest(proc, seen) == 0, "\n".join(seen)
    finally:
        kill_group(proc)


def _json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def test_send_then_status_of_a_done_task(cli: Any, worker: subprocess.Popen[str]) -> None:
    sent = cli("send", "APP", "add", "--args", "[2, 3]")
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    watched = cli("status", "APP", task_id, "--watch", "--json")
    assert watched.returncode == ExitCode.OK, watched.stderr
    final = _json_lines(watched.stdout)[-1]
    assert (final["id"], final["name"], final["status"], final["result"]) == (
        task_id,
        "add",
        "done",
        5,
    )
    assert final["created_at"] <= final["started_at"] <= final["finished_at"]
    shown = cli("status", "APP", task_id)
    assert shown.returncode == ExitCode.OK, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"task      {task_id}  add"
    assert "status    done  (attempt 1 of 1)" in lines
    assert "result    5" in lines
    assert any(line.startswith("finished  ") and "(ran " in line for line in lines), lines


def test_status_of_a_failed_task_shows_the_error(cli: Any, worker: subprocess.Popen[str]) -> None:
    task_id = cli("send", "APP", "boom", "--kwargs", '{"message": "no stock"}').stdout.strip()
    watched = cli("status", "APP", task_id, "--watch")
    assert watched.returncode == ExitCode.TASK_FAILED, watched.stderr
    assert "status    failed  (attempt 1 of 1)" in watched.stdout
    assert "error     ValueError: no stock" in watched.stdout
    assert "Traceback (most recent call last)" in watched.stdout  # the task's, not the CLI's
    again = cli("status", "APP", task_id, "--json")
    assert again.returncode == ExitCode.TASK_FAILED
    [record] = _json_lines(again.stdout)
    assert record["error"]["type"] == "ValueError"


def test_watch_follows_the_progress_until_the_end(cli: Any, worker: subprocess.Popen[str]) -> None:
    task_id = cli("send", "APP", "steps", "--args", "[4, 0.3]").stdout.strip()
    watched = cli("status", "APP", task_id, "--watch")
    assert watched.returncode == ExitCode.OK, watched.stderr
    lines = watched.stdout.splitlines()
    progress = [line for line in lines if line.startswith("running ") and "/4" in line]
    assert len(progress) >= 2, lines  # it saw the task move, not only its end
    steps_seen = [int(line.split("/4")[0].rsplit(" ", 1)[1]) for line in progress]
    assert steps_seen == sorted(set(steps_seen)), progress  # each change once, in order
    assert "4/4 100% step 4" in watched.stdout
    assert 'result    "all done"' in lines


def test_watch_on_a_terminal_redraws_one_progress_line(
    tmp_path: Path, cli: Any, worker: subprocess.Popen[str]
) -> None:
    task_id = cli("send", "APP", "steps", "--args", "[3, 0.3]").stdout.strip()
    command = [sys.executable, "-m", "taskflow", "status", cli.app, task_id, "--watch"]
    output = _run_on_a_terminal(tmp_path, command, cli.env)
    bar, _, record = output.partition("\r\n")  # the live line, then the final record
    frames = [frame for frame in bar.split("\r\x1b[K") if frame]
    assert len(frames) >= 3, output
    assert frames[-1] == "done      [########################] 3/3 100% step 3", frames
    assert "[########----------------] 1/3  33% step 1" in bar, frames
    assert "status    done" in record, output


def test_unknown_ids_and_names(cli: Any) -> None:
    missing = cli("status", "APP", "no-such-task")
    assert missing.returncode == ExitCode.NOT_FOUND
    assert "no task with id 'no-such-task' on " in missing.stderr
    unknown = cli("send", "APP", "nope")
    assert unknown.returncode == ExitCode.NOT_FOUND
    assert "no task named 'nope'" in unknown.stderr
    assert "add, boom, report, steps" in unknown.stderr
    unbound = cli("send", "APP", "add", "--args", "[1]")  # checked before anything is stored
    assert unbound.returncode == ExitCode.USAGE, unbound.stderr
    assert unbound.stderr.startswith("taskflow: ") and "'b'" in unbound.stderr, unbound.stderr
    assert len(unbound.stderr.strip().splitlines()) == 1
    stats = {row["queue"]: row for row in _json_lines(cli("stats", "APP", "--json").stdout)}
    assert stats["default"]["ready"] == 0


def test_stats_cancel_and_purge(cli: Any, url: str) -> None:
    ids = [cli("send", "APP", "add", "--args", f"[{i}, 1]").stdout.strip() for i in range(3)]
    later = cli("send", "APP", "add", "--args", "[0, 0]", "--delay", "600").stdout.strip()
    cli("send", "APP", "report")
    stats = cli("stats", "APP", "--json")
    assert stats.returncode == 0, stats.stderr
    rows = {row["queue"]: row for row in _json_lines(stats.stdout)}
    assert set(rows) == {"default", "reports"}
    assert (rows["default"]["ready"], rows["default"]["scheduled"]) == (3, 1)
    assert rows["reports"]["ready"] == 1
    table = cli("stats", "APP", "-q", "default").stdout.splitlines()
    assert table[0].split() == ["QUEUE", "READY", "SCHEDULED", "RUNNING", "DEAD", "FINISHED/MIN"]
    assert table[1].split() == ["default", "3", "1", "0", "0", "0"]

    cancelled = cli("cancel", "APP", ids[0], "not-an-id")
    assert cancelled.returncode == ExitCode.NOT_FOUND
    assert cancelled.stdout.splitlines() == [f"{ids[0]}: cancelled", "not-an-id: not found"]

    refused = cli("purge", "APP", "default")  # no terminal, no --yes
    assert refused.returncode == ExitCode.USAGE
    assert "add --yes" in refused.stderr
    purged = cli("purge", "APP", "default", "--yes", "--json")
    assert purged.returncode == 0, purged.stderr
    assert _json_lines(purged.stdout) == [{"queue": "default", "purged": 3}]
    record = read_record(url, later)
    assert record is not None and record.status is TaskStatus.CANCELLED
    assert record.error is not None and record.error.type == "Purged"
    rows = {row["queue"]: row for row in _json_lines(cli("stats", "APP", "--json").stdout)}
    assert (rows["default"]["ready"], rows["default"]["scheduled"]) == (0, 0)
    assert rows["default"]["finished_last_minute"] == 4  # one cancelled, three purged
    assert rows["reports"]["ready"] == 1  # another queue is left alone


def test_purge_asks_on_a_terminal(tmp_path: Path, cli: Any) -> None:
    cli("send", "APP", "add", "--args", "[1, 2]")
    for answer, expected in (
        ("n", "nothing purged"),
        ("y", "purged 1 task(s) from queue 'default'"),
    ):
        output = _run_on_a_terminal(
            tmp_path,
            [sys.executable, "-m", "taskflow", "purge", cli.app, "default"],
            cli.env,
            answer,
        )
        assert "Drop the 1 ready and 0 scheduled or retrying task(s) of queue 'default'" in output
        assert expected in output, output


def _run_on_a_terminal(
    tmp_path: Path, command: list[str], env: dict[str, str], answer: str | None = None
) -> str:
    """Run `command` with a pseudo-terminal as stdin and stdout; type `answer` at its prompt."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        command, stdin=follower, stdout=follower, stderr=follower, env=env, cwd=tmp_path
    )
    os.close(follower)
    output = b""
    try:
        while answer is not None and b"[y/N]" not in output:
            chunk = _read_terminal(leader)
            if not chunk:
                break
            output += chunk
        if answer is not None:
            os.write(leader, answer.encode() + b"\n")
        while chunk := _read_terminal(leader):
            output += chunk
        assert proc.wait(timeout=DEADLINE_S) == 0, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    return output.decode(errors="replace")


def _read_terminal(fd: int) -> bytes:
    import select

    ready, _, _ = select.select([fd], [], [], DEADLINE_S)
    if not ready:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:  # the other side closed (EIO on Linux)
        return b""


def test_dead_letters_and_requeue_all(cli: Any, url: str, worker: subprocess.Popen[str]) -> None:
    failed = [cli("send", "APP", "boom", "--args", f'["no. {i}"]').stdout.strip() for i in range(2)]
    for task_id in failed:
        assert cli("status", "APP", task_id, "--watch").returncode == ExitCode.TASK_FAILED
    dead = cli("dead-letters", "APP", "--json")
    assert dead.returncode == 0, dead.stderr
    assert sorted(r["id"] for r in _json_lines(dead.stdout)) == sorted(failed)
    requeued = cli("requeue", "APP", "--all")
    assert requeued.returncode == 0, requeued.stderr
    pairs = dict(line.split(" -> ") for line in requeued.stdout.splitlines()[:-1])
    assert sorted(pairs) == sorted(failed)
    assert requeued.stdout.splitlines()[-1] == "requeued 2 dead letter(s)"
    for new_id in pairs.values():
        record = read_record(url, new_id)
        assert record is not None and record.requeued_from in failed
    again = cli("requeue", "APP", failed[0])
    assert again.returncode == ExitCode.NOT_FOUND
    assert again.stdout.strip() == f"{failed[0]}: not a dead letter; skipped"
    assert enqueue(url, "add", 1, 1)  # the backend still takes tasks


def test_db_upgrade_migrates_the_named_apps_schema(tmp_path: Path) -> None:
    from taskflow.postgres._schema import LATEST_VERSION

    url = shared_url("postgres")
    dsn, _, schema = url.rpartition("schema=")
    dsn = dsn.rstrip("?&")
    try:
        done = run_cli(tmp_path, "db", "upgrade", dsn, "--schema", schema, "--app", "shop")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"app 'shop': schema is at version {LATEST_VERSION}"
        assert _schema_version(dsn, f"{schema}_shop") == LATEST_VERSION
        bad = run_cli(tmp_path, "db", "upgrade", dsn, "--schema", schema, "--app", "no way")
        assert bad.returncode == ExitCode.USAGE, bad.stderr
        assert "app name 'no way' cannot be used" in bad.stderr
    finally:
        drop_shared(url)


def _schema_version(dsn: str, schema: str) -> int:
    import asyncio

    import asyncpg

    async def read() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval(f'SELECT max(version) FROM "{schema}".schema_version'))
        finally:
            await conn.close()

    return asyncio.run(read())
