"""Helpers for the tests that run the `taskflow` command as a real process.

`write_app` puts a module with a module-level app in a temporary directory; `run_cli` runs one
command to its end, `start_cli` starts one (a worker) and `wait_for_line` reads its output until
a marker, never by sleeping, always with a deadline. `shared_url` gives a Redis URL with a key
prefix or a PostgreSQL URL with a schema of the test's own (`drop_shared` removes them), and
`read_record` / `enqueue` reach that backend from the test process through the library.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from taskflow import QueueTasks, TaskRecord
from tests.services import postgres_dsn, redis_url

DEADLINE_S = 30.0


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI process: the temp dir importable, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("TASKFLOW_LOG_LEVEL", None)
    env.update(extra)
    return env


def write_app(tmp_path: Path, module: str, source: str) -> str:
    """Write `source` (dedented) as ``<tmp_path>/<module>.py``; returns ``module:app``."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    return f"{module}:app"


def run_cli(
    tmp_path: Path,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = DEADLINE_S,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m taskflow *args`` in `tmp_path` to its end; stdin is not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "taskflow", *args],
        capture_output=True,
        text=True,
        input=stdin if stdin is not None else "",
        env=env if env is not None else env_for(tmp_path),
        cwd=tmp_path,
        timeout=timeout,
    )


def start_cli(
    tmp_path: Path,
    *args: str,
    new_session: bool = False,
    env: dict[str, str] | None = None,
    stop_signals_blocked: bool = False,
) -> subprocess.Popen[str]:
    """Start ``python -m taskflow *args`` with stdout and stderr merged into one pipe.

    `new_session`: in a session (and process group) of its own, as a terminal runs a command,
    so the test can signal the whole group with `os.killpg`. `stop_signals_blocked`: the
    process starts with SIGINT and SIGTERM blocked, so that a signal sent at once stays
    pending until the process unblocks them (a stop that comes "while it starts", on cue).
    """
    preexec = _block_stop_signals if stop_signals_blocked else None
    return subprocess.Popen(
        [sys.executable, "-m", "taskflow", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env if env is not None else env_for(tmp_path),
        cwd=tmp_path,
        start_new_session=new_session,
        preexec_fn=preexec,
    )


def _block_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def wait_for_line(
    proc: subprocess.Popen[str],
    marker: str,
    seen: list[str] | None = None,
    *,
    deadline_s: float = DEADLINE_S,
) -> list[str]:
    """Read the process's output until a line contains `marker`; fail after `deadline_s`.

    Lines read are appended to `seen` (a new list if None), which is returned.
    """
    seen = [] if seen is None else seen
    lines = _lines(proc)
    deadline = time.monotonic() + deadline_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            lines.put(None)  # the end stays visible to the next reader
            break
        seen.append(line.rstrip())
        if marker in line:
            return seen
    kill_group(proc)
    raise AssertionError(f"never saw {marker!r}; output so far:\n" + "\n".join(seen))


def read_rest(proc: subprocess.Popen[str], seen: list[str], *, timeout: float = DEADLINE_S) -> int:
    """Wait for the process to exit, collecting the rest of its output; returns its status."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        _take_lines_read(proc, seen)
        raise AssertionError(
            f"still running after {timeout} s; output so far:\n" + "\n".join(seen)
        ) from None
    lines = _lines(proc)
    while (line := lines.get(timeout=timeout)) is not None:
        seen.append(line.rstrip())
    lines.put(None)
    return proc.returncode


def _take_lines_read(proc: subprocess.Popen[str], seen: list[str]) -> None:
    """Append to `seen` the lines of `proc` read so far and not yet taken, without waiting."""
    lines = _readers.get(proc)
    while lines is not None:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            return
        if line is None:
            lines.put(None)
            return
        seen.append(line.rstrip())


_readers: weakref.WeakKeyDictionary[subprocess.Popen[str], queue.Queue[str | None]]
_readers = weakref.WeakKeyDictionary()


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The lines of `proc`'s output as a thread reads them (None at the end).

    A thread, not `select` on the pipe: the text stream reads ahead, so a line already in its
    buffer would wait for more output that may never come.
    """
    lines = _readers.get(proc)
    if lines is None:
        stream = proc.stdout
        assert stream is not None
        lines = _readers[proc] = queue.Queue()

        def pump(out: queue.Queue[str | None] = lines) -> None:
            with stream:  # closed at the end of the output, by the one thread reading it
                for line in stream:
                    out.put(line)
            out.put(None)

        threading.Thread(target=pump, name=f"output of {proc.pid}", daemon=True).start()
    return lines


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a process started by `start_cli` (its whole group if it leads one), and reap it.

    Its output pipe is closed here unless a reader thread owns it (`_lines` closes it at the end).
    """
    if proc.poll() is None:
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, 9)
            else:
                proc.kill()
        except ProcessLookupError:
            pass
    proc.wait()
    if proc not in _readers and proc.stdout is not None:
        proc.stdout.close()


# -- shared backends --------------------------------------------------------------------------


def shared_url(kind: str) -> str:
    """A URL of the test server of `kind` ("redis" or "postgres") that no other test uses."""
    token = os.urandom(5).hex()
    if kind == "redis":
        return f"{redis_url()}?prefix=tfcli-{token}"
    dsn = postgres_dsn()
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}schema=tfcli_{token}"


def drop_shared(url: str) -> None:
    """Delete what the tests stored under `url`'s prefix or schema."""
    asyncio.run(_drop(url))


async def _drop(url: str) -> None:
    if url.startswith("redis"):
        import redis.asyncio as aioredis

        base, _, query = url.partition("?prefix=")
        client = aioredis.Redis.from_url(base)
        try:
            keys = [k async for k in client.scan_iter(match=f"{query}:*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
        return
    base, _, schema = url.rpartition("schema=")
    conn = await asyncpg.connect(base.rstrip("?&"))
    try:
        # An app's tables live in "<schema>_<app name>": drop every app's.
        names = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname = $1 OR starts_with(nspname, $2)",
            schema,
            f"{schema}_",
        )
        for row in names:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{row["nspname"]}" CASCADE')
    finally:
        await conn.close()


def _app_on(url: str, task_names: Sequence[str]) -> QueueTasks:
    app = QueueTasks(name="cli-test", broker=url)
    for name in task_names:
        app.task(name=name)(_placeholder)
    return app


def _placeholder(*args: Any, **kwargs: Any) -> None:  # pragma: no cover - never run here
    raise AssertionError("only sent from the tests, run by the workers of the CLI")


def enqueue(url: str, task_name: str, *args: Any, **kwargs: Any) -> str:
    """Send `task_name` with `args`/`kwargs` to the backend at `url`; returns the task id."""

    async def send() -> str:
        app = _app_on(url, [task_name])
        async with app:
            handle = await app.add_task(task_name, args=args, kwargs=kwargs)
            return handle.task_id

    return asyncio.run(send())


def read_record(url: str, task_id: str) -> TaskRecord | None:
    """The stored record of `task_id` on the backend at `url`."""

    async def get() -> TaskRecord | None:
        app = _app_on(url, [])
        async with app:
            return await app.get(task_id)

    return asyncio.run(get())
