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

import functools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import NoReturn
from urllib.parse import urlsplit

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


def start_redis_server(port: int, *, ready_timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """Start a private, non-persistent ``redis-server`` on 127.0.0.1:`port` and wait for PING.

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
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + ready_timeout
    while not redis_ping("127.0.0.1", port, timeout=0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(
                f"redis-server on port {port} did not start (exit code {proc.returncode}); "
                f"is the port taken? Its log:\n{_tail(logfile)}"
            )
        time.sleep(0.05)  # polling a child process's readiness: there is no event to wait on
    if proc.poll() is not None:  # someone else's server answered on that port
        raise RuntimeError(f"port {port} is taken by another server; use free_port()")
    return proc


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
