"""The `taskflow` command as a real process: its manners (one-line errors, exit statuses a
script can tell apart, help and version), a worker on the memory backend, and
`QueueTasks.run_forever()` under real signals. Commands against Redis and PostgreSQL with
real workers are in ``test_cli_commands.py``; process groups and restarts in
``test_cli_worker.py``.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskflow.cli import ExitCode
from taskflow.cli._errors import EXIT_CODE_MEANINGS
from taskflow.cli._main import _parser
from tests.cli_support import (
    env_for,
    kill_group,
    read_rest,
    run_cli,
    start_cli,
    wait_for_line,
    write_app,
)
from tests.services import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

SLOW_APP = """
import anyio
from taskflow import GlobalConfig, QueueTasks

app = QueueTasks(name="cli-test", config=GlobalConfig(shutdown_grace_s=10))


@app.task
async def slow() -> str:
    print("task started", flush=True)
    await anyio.sleep(0.3)
    print("task finished", flush=True)
    return "ok"


@app.worker_service
async def kick(app, state) -> None:
    handle = await slow.add_task()
    print("enqueued", handle.task_id, flush=True)


if __name__ == "__main__":
    app.run_forever(concurrency=2)
    print("run_forever returned", flush=True)
"""

MEMORY_APP = """
from taskflow import QueueTasks

app = QueueTasks(name="mem")


@app.task
async def add(a: int, b: int) -> int:
    return a + b
"""


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed on stderr (asserting it is one line)."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("taskflow"), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


# -- run_forever and the worker on memory -------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_forever_stops_gracefully_on_signal(tmp_path: Path, signum: int) -> None:
    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "slow_app.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env_for(tmp_path),
    )
    try:
        wait_for_line(proc, "task started")
        proc.send_signal(signum)
        lines = wait_for_line(proc, "run_forever returned")
        assert any("task finished" in line for line in lines), lines
        assert proc.wait(timeout=20) == 0
    finally:
        kill_group(proc)


def test_run_forever_takes_copies_of_one_signal_as_one_stop_request(tmp_path: Path) -> None:
    """Two SIGINTs at once (a terminal's and a supervisor's copy) still mean a graceful stop."""
    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "slow_app.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env_for(tmp_path),
    )
    try:
        wait_for_line(proc, "task started")
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        lines = wait_for_line(proc, "run_forever returned")
        assert any("task finished" in line for line in lines), lines
        assert proc.wait(timeout=20) == 0
    finally:
        kill_group(proc)


def test_worker_says_what_it_is_and_stops_on_sigterm(tmp_path: Path) -> None:
    target = write_app(tmp_path, "cli_slow_app", SLOW_APP)
    proc = start_cli(tmp_path, "worker", target, "--concurrency", "3")
    seen: list[str] = []
    try:
        wait_for_line(proc, "task started", seen)
        [ready] = [line for line in seen if " ready: " in line]
        assert "backend=memory:// (inside this process)" in ready, ready
        assert "queues=default concurrency=3 tasks=slow" in ready, ready
        proc.send_signal(signal.SIGTERM)
        wait_for_line(proc, "task finished", seen)
        assert read_rest(proc, seen) == 0
    finally:
        kill_group(proc)
    assert not any(" DEBUG " in line for line in seen), seen


FAILING_APP = """
from taskflow import QueueTasks, TaskContext

app = QueueTasks(name="cli-test")


@app.task(retries=1, retry_backoff=0)
async def flaky(ctx: TaskContext) -> str:
    if ctx.attempt == 1:
        raise ValueError("first try")
    return "ok"


@app.task
async def fine() -> str:
    return "ok"


@app.task
async def broken() -> None:
    raise KeyError("nope")


@app.worker_service
async def kick(app, state) -> None:
    for name in ("fine", "flaky", "broken"):
        await app.add_task(name)
"""


def test_worker_logs_starts_and_failures_at_info_and_no_end_of_success(tmp_path: Path) -> None:
    """The default level: one line per task start and per failed attempt, nothing more per
    task, all on ``taskflow.worker.runs``."""
    target = write_app(tmp_path, "cli_failing_app", FAILING_APP)
    proc = start_cli(tmp_path, "worker", target)
    seen: list[str] = []
    try:
        wait_for_line(proc, "(broken) failed for good", seen)
        wait_for_line(proc, "(flaky) attempt 2 started", seen)
        proc.send_signal(signal.SIGTERM)
        assert read_rest(proc, seen) == 0
    finally:
        kill_group(proc)
    runs = [line for line in seen if " taskflow.worker.runs[" in line]
    starts = [line for line in runs if line.endswith(" started")]
    pattern = re.compile(r"\((\w+)\) attempt (\d) started$")
    assert sorted(m.groups() for s in starts if (m := pattern.search(s))) == [
        ("broken", "1"),
        ("fine", "1"),
        ("flaky", "1"),
        ("flaky", "2"),
    ]
    failures = [line for line in runs if not line.endswith(" started")]
    assert len(failures) == 2, runs
    [retried] = [line for line in failures if "(flaky)" in line]
    assert " WARNING " in retried and retried.endswith(
        "attempt 1 failed, retrying: ValueError: first try"
    )
    [failed] = [line for line in failures if "(broken)" in line]
    assert " ERROR " in failed and failed.endswith("failed for good on attempt 1: KeyError: 'nope'")
    assert not any("ended in" in line for line in seen)  # no line for a success


def test_worker_logs_each_task_start_and_end_at_debug(tmp_path: Path) -> None:
    target = write_app(tmp_path, "cli_slow_app2", SLOW_APP)
    proc = start_cli(tmp_path, "--log-level", "DEBUG", "worker", target)
    seen: list[str] = []
    try:
        line = wait_for_line(proc, "attempt 1 ended in", seen)[-1]
        assert re.search(r"task \S+ \(slow\) attempt 1 ended in 0\.\d{3} s: done$", line), line
        assert any(re.search(r"task \S+ \(slow\) attempt 1 started$", s) for s in seen), seen
        proc.send_signal(signal.SIGTERM)
        assert read_rest(proc, seen) == 0
    finally:
        kill_group(proc)


# -- errors and exit statuses -----------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == "taskflow 0.1.0"


def test_help_lists_every_exit_status(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--help")
    assert done.returncode == 0
    for code in ExitCode:
        assert re.search(rf"^ +{int(code)}  \S", done.stdout, re.MULTILINE), code


def test_every_positional_argument_has_help() -> None:
    def positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found += positionals(sub)
            elif not action.option_strings:
                found.append(action)
        return found

    actions = positionals(_parser())
    assert len(actions) >= 10
    assert all(action.help for action in actions), [a.dest for a in actions if not a.help]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log-level", "foo", "worker", "x:app"], "'foo' is not a log level"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["worker"], "the following arguments are required: MODULE:APP"),
        (["status", "mem_app:app"], "the following arguments are required: TASK_ID"),
        (["worker", "no_colon"], "expected MODULE:APP"),
        (["worker", "missing_module_xyz:app"], "cannot import module 'missing_module_xyz'"),
        (["worker", "mem_app:nothing"], "not a QueueTasks app"),
        (["worker", "mem_app:app", "--processes", "0"], "--processes must be >= 1"),
        (["send", "mem_app:app", "add", "--args", "[1,"], "--args '[1,' is not JSON"),
        (["send", "mem_app:app", "add", "--kwargs", "[1]"], "--kwargs must be an object in JSON"),
        (["requeue", "mem_app:app"], "give the ids of dead letters to requeue, or --all"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    write_app(tmp_path, "mem_app", MEMORY_APP)
    done = run_cli(tmp_path, *args)
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert message in _one_line_error(done)


def test_a_bad_log_level_in_the_environment_is_a_usage_error(tmp_path: Path) -> None:
    write_app(tmp_path, "mem_app", MEMORY_APP)
    env = env_for(tmp_path, TASKFLOW_LOG_LEVEL="loud")
    done = run_cli(tmp_path, "worker", "mem_app:app", env=env)
    assert done.returncode == ExitCode.USAGE
    assert "'loud' is not a log level" in _one_line_error(done)


@pytest.mark.parametrize(
    "command",
    [
        ["status", "mem_app:app", "some-id"],
        ["status", "mem_app:app", "some-id", "--watch"],
        ["stats", "mem_app:app"],
        ["send", "mem_app:app", "add", "--args", "[1, 2]"],
        ["cancel", "mem_app:app", "some-id"],
        ["purge", "mem_app:app", "default", "--yes"],
        ["dead-letters", "mem_app:app"],
        ["requeue", "mem_app:app", "--all"],
        ["locks", "mem_app:app"],
        ["worker", "mem_app:app", "--processes", "2"],
    ],
)
def test_on_the_memory_backend_other_processes_cannot_reach_the_tasks(
    tmp_path: Path, command: list[str]
) -> None:
    write_app(tmp_path, "mem_app", MEMORY_APP)
    done = run_cli(tmp_path, *command)
    assert done.returncode == ExitCode.NOT_SHARED, done.stderr
    line = _one_line_error(done)
    assert "memory:// (inside this process)" in line, line
    assert "Redis or PostgreSQL URL" in line, line


HOOK_APP = """
from taskflow import QueueTasks

app = QueueTasks(name="hooks")


@app.on_startup
async def open_database(state) -> None:
    raise RuntimeError("the database is down")
"""


def test_a_failing_startup_hook_is_one_line_naming_the_hook(tmp_path: Path) -> None:
    target = write_app(tmp_path, "hook_app", HOOK_APP)
    done = run_cli(tmp_path, "worker", target)
    assert done.returncode == ExitCode.WORKER_FAILED, done.stderr
    assert _one_line_error(done) == (
        "taskflow: the worker did not start: on_startup hook open_database() raised "
        "RuntimeError: the database is down"
    )


def test_debug_shows_the_traceback_of_an_error(tmp_path: Path) -> None:
    target = write_app(tmp_path, "hook_app2", HOOK_APP)
    done = run_cli(tmp_path, "--log-level", "DEBUG", "worker", target)
    assert done.returncode == ExitCode.WORKER_FAILED
    assert "Traceback (most recent call last)" in done.stderr
    assert 'raise RuntimeError("the database is down")' in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("taskflow: the worker did not start")


def test_an_error_while_importing_the_app_module(tmp_path: Path) -> None:
    write_app(tmp_path, "broken_app", "raise KeyError('oops')\n")
    done = run_cli(tmp_path, "worker", "broken_app:app")
    assert done.returncode == ExitCode.ERROR
    assert "importing module 'broken_app' raised KeyError: 'oops'" in _one_line_error(done)


DOWN_APP = """
from taskflow import QueueTasks

app = QueueTasks(name="down", broker="{url}")


@app.task
async def add(a: int, b: int) -> int:
    return a + b
"""


@pytest.mark.parametrize("kind", ["redis", "postgres"])
@pytest.mark.parametrize(
    "command",
    [
        ["worker", "down_app:app"],
        ["worker", "down_app:app", "--processes", "2"],
        ["status", "down_app:app", "some-id"],
        ["send", "down_app:app", "add", "--args", "[1, 2]"],
    ],
)
def test_a_backend_nobody_listens_on_is_one_line_at_once(
    tmp_path: Path, kind: str, command: list[str]
) -> None:
    port = free_port()
    url = {
        "redis": f"redis://:s3cret@127.0.0.1:{port}/0",
        "postgres": f"postgresql://taskflow:s3cret@127.0.0.1:{port}/taskflow",
    }[kind]
    write_app(tmp_path, "down_app", DOWN_APP.format(url=url))
    started = time.monotonic()
    done = run_cli(tmp_path, *command)
    took = time.monotonic() - started
    assert done.returncode == ExitCode.UNAVAILABLE, done.stderr
    line = _one_line_error(done)
    assert line.startswith("taskflow: cannot reach "), line
    assert "s3cret" not in line
    assert took < 5, took  # interpreter start-up included; the refusal itself is immediate


# -- the docs ---------------------------------------------------------------------------------


def test_the_cli_page_lists_every_exit_status() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d+) \| `(\w+)` \|", text, re.MULTILINE))
    assert rows == {str(int(code)): code.name for code in EXIT_CODE_MEANINGS}
