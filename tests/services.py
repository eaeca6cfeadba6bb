"""Where the tests find their real servers, and helpers for tests that need one of their own.

`redis_url()` and `postgres_dsn()` read ``TASKFLOW_TEST_REDIS_URL`` / ``TASKFLOW_TEST_POSTGRES_DSN``
(printed by ``scripts/services``) and check that the server answers. A missing or silent server
skips the test with the reason, or fails it when ``TASKFLOW_REQUIRE_SERVICES=1`` (set by
``.ci/run``, so CI never passes by skipping every backend test).

`start_redis_server` / `stop_process` run a private ``redis-server`` for tests that must crash or
restart a server; it is stopped by its own pid, never by name.

This module holds no fixtures: backend fixtures live in ``tests/plugins/``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import anyio
import pytest

__all__ = [
    "POSTGRES_ENV",
    "REDIS_ENV",
    "REQUIRE_ENV",
    "free_port",
    "postgres_dsn",
    "redis_ping",
    "redis_url",
    "start_redis_server",
    "stop_process",
]

REDIS_ENV = "TASKFLOW_TEST_REDIS_URL"
POSTGRES_ENV = "TASKFLOW_TEST_POSTGRES_DSN"
REQUIRE_ENV = "TASKFLOW_REQUIRE_SERVICES"

_HOW_TO_FIX = (
    "run `scripts/services` and export the variables it prints "
    "(`export $(scripts/services)`), or run everything with `scripts/test`"
)
_CONNECT_TIMEOUT_S = 1.0


def redis_url() -> str:
    """The URL of the test Redis server, checked to accept connections.

    Skips the calling test if it is not configured or not answering (fails it instead when
    ``TASKFLOW_REQUIRE_SERVICES=1``).
    """
    return _checked_url(REDIS_ENV, "Redis", default_port=6379)


def postgres_dsn() -> str:
    """The DSN of the test PostgreSQL database, checked to accept connections.

    Skips the calling test if it is not configured or not answering (fails it instead when
    ``TASKFLOW_REQUIRE_SERVICES=1``).
    """
    return _checked_url(POSTGRES_ENV, "PostgreSQL", default_port=5432)


def _checked_url(env_name: str, server: str, *, default_port: int) -> str:
    url = os.environ.get(env_name, "").strip()
    if not url:
        _unavailable(f"{server} tests need {env_name}, which is not set: {_HOW_TO_FIX}")
    problem = _connect_problem(url, default_port)
    if problem is not None:
        _unavailable(f"{server} at {env_name}={url!r} does not answer ({problem}): {_HOW_TO_FIX}")
    return url


@functools.cache
def _connect_problem(url: str, default_port: int) -> str | None:
    """Why a TCP connection to the URL's host and port fails, or None if it works.

    Cached per process and URL: one connect per server per test run.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or default_port
    except ValueError as exc:
        return f"bad port in URL: {exc}"
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc}"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so this is a failure, not a skip)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_ping(host: str, port: int, *, timeout: float = _CONNECT_TIMEOUT_S) -> bool:
    """True if a Redis server at host:port answers PING (raw RESP over a socket, no client)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_server(
    port: int, *, ready_timeout: float = 10.0, args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start a private, non-persistent ``redis-server`` on 127.0.0.1:`port` and wait for PING.

    `args` are more command-line settings, after (so overriding) the defaults: e.g.
    ``("--appendonly", "yes", "--dir", path)`` for a server that keeps an append-only file.

    Stop it with `stop_process`. Skips (or fails, under ``TASKFLOW_REQUIRE_SERVICES=1``) if
    ``redis-server`` is not installed.

    Raises:
        RuntimeError: the server exited or did not answer within `ready_timeout` seconds; the
            message carries the end of its log.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable(f"redis-server is not installed: {_HOW_TO_FIX}")
    logfile = os.path.join(tempfile.gettempdir(), f"taskflow-test-redis-{port}.log")
    proc = subprocess.Popen(
        [
            binary,
            *("--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--logfile", logfile),
            *args,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(
                f"redis-server on port {port} exited (code {proc.returncode}); is the port taken?"
            )
        return redis_ping("127.0.0.1", port, timeout=0.2)

    try:
        wait_until(
            ready, deadline_s=ready_timeout, failure=f"redis-server on port {port} did not start"
        )
    except RuntimeError as exc:
        stop_process(proc)
        raise RuntimeError(f"{exc}; its log:\n{_tail(logfile)}") from None
    if proc.poll() is not None:  # someone else's server answered on that port
        raise RuntimeError(f"port {port} is taken by another server; use free_port()")
    return proc


def wait_until(
    check: Callable[[], object], *, deadline_s: float, failure: str, every_s: float = 0.05
) -> None:
    """Ask `check` every `every_s` until it is true; `RuntimeError(failure)` after `deadline_s`.

    For the state of real processes and servers (a child's readiness, a cluster converging),
    which offer no event to wait on; asynchronous code uses `poll_until`.
    """
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(every_s)  # the one synchronous poll: see the docstring


async def poll_until(
    check: Callable[[], object], *, deadline_s: float, every_s: float = 0.02
) -> None:
    """Ask `check` every `every_s` until it is true; `TimeoutError` after `deadline_s`.

    For the state of real processes and servers (a log another process writes, counters in a
    server), which offer no event to wait on; in-process state waits on an event instead.
    `check` may be a coroutine function (a read from the server).
    """
    with anyio.fail_after(deadline_s):
        while not await _checked(check):
            await anyio.sleep(every_s)  # the one asynchronous poll: see the docstring


async def _checked(check: Callable[[], object]) -> object:
    result = check()
    return await result if inspect.isawaitable(result) else result


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 5.0) -> None:
    """Stop a process this test started, by its pid: SIGTERM, wait, then SIGKILL if needed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


# -- a private PostgreSQL cluster ------------------------------------------------------------

_PG_READY_TIMEOUT_S = 30.0


def _bindir() -> Path | None:
    """The directory of initdb/postgres/pg_isready (Debian keeps them off PATH)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if candidates:
        return candidates[0].parent
    found = shutil.which("initdb")
    if found and (Path(found).parent / "postgres").exists():
        return Path(found).parent
    return None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster this test owns: start, stop (fast shutdown), start again."""

    def __init__(
        self, bindir: Path, datadir: Path, port: int, user: str | None, also_on: str | None
    ) -> None:
        self.bindir, self.datadir, self.port, self.user = bindir, datadir, port, user
        #: One more address to listen on (and trust clients of its /16), besides loopback.
        self.also_on = also_on
        self.proc: subprocess.Popen[bytes] | None = None

    def dsn_on(self, host: str) -> str:
        """The DSN through `host` (loopback, or `also_on`)."""
        return f"postgresql://taskflow@{host}:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://taskflow@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        subprocess.run(
            [self.bindir / "initdb", "-D", self.datadir, "-U", "taskflow", "--auth=trust"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user=self.user,
            timeout=60,
        )
        if self.also_on is not None:
            network = ".".join(self.also_on.split(".")[:2]) + ".0.0/16"
            with (self.datadir / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {network} trust\n")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.bindir / "postgres",
                *("-D", str(self.datadir), "-p", str(self.port), "-k", str(self.datadir)),
                *("-c", f"listen_addresses={self._addresses}", "-c", "fsync=off"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self.user,
        )
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"private PostgreSQL on port {self.port} exited")
            return self._answers()

        wait_until(
            ready,
            deadline_s=_PG_READY_TIMEOUT_S,
            failure=f"private PostgreSQL on port {self.port} did not start",
        )

    @property
    def _addresses(self) -> str:
        return "127.0.0.1" if self.also_on is None else f"127.0.0.1,{self.also_on}"

    def _answers(self) -> bool:
        result = subprocess.run(
            [self.bindir / "pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return result.returncode == 0

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, the server exits cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@contextlib.contextmanager
def private_postgres(*, also_on: str | None = None) -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the caller's own (``initdb`` into a temporary directory, a free
    loopback port, trust authentication), started, and stopped by its pid at the end. As root
    it runs as the ``postgres`` user (PostgreSQL refuses root). Skips (or fails under
    ``TASKFLOW_REQUIRE_SERVICES=1``) where PostgreSQL is not set up."""
    postgres_dsn()  # skip (or fail) with the usual reason when PostgreSQL is not set up at all
    bindir = _bindir()
    if bindir is None:
        _unavailable("PostgreSQL server binaries (initdb, postgres) are not installed")
    user = "postgres" if os.geteuid() == 0 else None
    workdir = Path(tempfile.mkdtemp(prefix="taskflow-pg-"))
    datadir = workdir / "data"
    datadir.mkdir()
    if user is not None:
        shutil.chown(workdir, user)
        shutil.chown(datadir, user)
    srv = PrivatePostgres(bindir, datadir, free_port(), user, also_on)
    try:
        srv.init()
        srv.start()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


CHROMIUM_ENV = "TASKFLOW_CHROMIUM"


def chromium_path() -> Path:
    """Debian's Chromium for the browser tests (``TASKFLOW_CHROMIUM`` overrides
    ``/usr/bin/chromium``); skips the test if it is missing, or fails it under
    ``TASKFLOW_REQUIRE_SERVICES=1``. `scripts/services` installs it."""
    path = Path(os.environ.get(CHROMIUM_ENV) or "/usr/bin/chromium")
    if not path.is_file():
        _unavailable(f"the browser tests need Chromium at {path}: {_HOW_TO_FIX}")
    return path
