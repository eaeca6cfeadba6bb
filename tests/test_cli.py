"""The `taskflow` CLI and `QueueTasks.run_forever()`: real processes, real signals.

These start Python subprocesses, so they are marked slow; each waits on the child's output lines
(never on a sleep) with a deadline.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DEADLINE_S = 20.0


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_for_line(proc: subprocess.Popen[str], marker: str) -> list[str]:
    """Read the child's stdout until a line contains `marker`; fail after DEADLINE_S."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip())
        if marker in line:
            return seen
    proc.kill()
    raise AssertionError(f"never saw {marker!r}; output so far: {seen}")


SLOW_APP = textwrap.dedent(
    """
    import anyio
    from taskflow import GlobalConfig, QueueTasks

    app = QueueTasks(name="cli-test", config=GlobalConfig(shutdown_grace_s=10))
    release = anyio.Event()

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
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_forever_stops_gracefully_on_signal(tmp_path: Path, signum: int) -> None:
    script = tmp_path / "slow_app.py"
    script.write_text(SLOW_APP)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(tmp_path),
    )
    try:
        _wait_for_line(proc, "task started")
        proc.send_signal(signum)
        lines = _wait_for_line(proc, "run_forever returned")
        assert any("task finished" in line for line in lines), lines
        assert proc.wait(timeout=DEADLINE_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_worker_runs_an_app_and_stops_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "cli_slow_app.py").write_text(SLOW_APP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskflow", "worker", "cli_slow_app:app", "--concurrency", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    try:
        lines = _wait_for_line(proc, "task started")
        assert any("concurrency=3" in line for line in lines), lines
        proc.send_signal(signal.SIGTERM)
        _wait_for_line(proc, "task finished")
        assert proc.wait(timeout=DEADLINE_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskflow", *args],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
        timeout=DEADLINE_S,
    )


def test_cli_refuses_processes_on_the_memory_backend(tmp_path: Path) -> None:
    (tmp_path / "mem_app.py").write_text("from taskflow import QueueTasks\napp = QueueTasks()\n")
    done = _run_cli(tmp_path, "worker", "mem_app:app", "--processes", "2")
    assert done.returncode == 2
    assert "--processes 2 needs a backend that processes can share" in done.stderr
    assert "redis://" in done.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon", "expected MODULE:APP"),
        ("missing_module_xyz:app", "cannot import module 'missing_module_xyz'"),
        ("mem_app2:nothing", "not a QueueTasks app"),
    ],
)
def test_cli_explains_a_bad_app_target(tmp_path: Path, target: str, message: str) -> None:
    (tmp_path / "mem_app2.py").write_text("from taskflow import QueueTasks\napp = QueueTasks()\n")
    done = _run_cli(tmp_path, "worker", target)
    assert done.returncode != 0
    assert message in done.stderr


def test_cli_status_of_an_unknown_task(tmp_path: Path) -> None:
    (tmp_path / "mem_app3.py").write_text("from taskflow import QueueTasks\napp = QueueTasks()\n")
    done = _run_cli(tmp_path, "status", "mem_app3:app", "nope")
    assert done.returncode == 1
    assert "no task 'nope'" in done.stderr


def test_cli_dead_letters_lists_none_on_a_fresh_backend(tmp_path: Path) -> None:
    (tmp_path / "mem_app4.py").write_text("from taskflow import QueueTasks\napp = QueueTasks()\n")
    done = _run_cli(tmp_path, "dead-letters", "mem_app4:app")
    assert done.returncode == 0, done.stderr
    assert "0 dead-lettered task(s)" in done.stdout


def test_cli_db_upgrade_creates_and_then_keeps_the_schema(tmp_path: Path) -> None:
    from tests.services import postgres_dsn

    dsn = postgres_dsn()
    schema = f"tf_cli_{os.getpid()}"
    try:
        first = _run_cli(tmp_path, "db", "upgrade", dsn, "--schema", schema)
        assert first.returncode == 0, first.stderr
        assert "schema is at version" in first.stdout
        assert "applied migration 1" in first.stderr
        again = _run_cli(tmp_path, "db", "upgrade", dsn, "--schema", schema)
        assert again.returncode == 0, again.stderr
        assert again.stdout == first.stdout
        assert "applied migration" not in again.stderr
    finally:
        import asyncio

        import asyncpg

        async def drop() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop())
