"""A restarted PostgreSQL server: producers, workers and result waiters reconnect and carry on.

The test runs a private PostgreSQL (``initdb`` into a temporary directory, on a free loopback
port, trust authentication) so that it can stop and start it without disturbing the shared test
server; the server is stopped by its own pid. As root, the server runs as the ``postgres`` user
(PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import asyncpg
import pytest

from taskflow.abc import TaskOutcome, TaskStatus
from taskflow.postgres import from_url
from taskflow.testing import FakeClock
from tests.conformance._helpers import claim, done, enqueue_one
from tests.services import free_port, postgres_dsn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

_READY_TIMEOUT_S = 30.0


def _bindir() -> Path | None:
    """The directory of initdb/postgres/pg_isready (Debian keeps them off PATH)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if candidates:
        return candidates[0].parent
    found = shutil.which("initdb")
    if found and (Path(found).parent / "postgres").exists():
        return Path(found).parent
    return None


class PrivateServer:
    """A throwaway PostgreSQL cluster this test owns: start, stop (fast shutdown), start again."""

    def __init__(self, bindir: Path, datadir: Path, port: int, user: str | None) -> None:
        self.bindir, self.datadir, self.port, self.user = bindir, datadir, port, user
        self.proc: subprocess.Popen[bytes] | None = None

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

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.bindir / "postgres",
                *("-D", str(self.datadir), "-p", str(self.port), "-k", str(self.datadir)),
                *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self.user,
        )
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private PostgreSQL on port {self.port} did not start")
            time.sleep(0.05)  # polling a child's readiness: there is no event to wait on

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


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    postgres_dsn()  # skip (or fail) with the usual reason when PostgreSQL is not set up at all
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, postgres) are not installed")
    user = "postgres" if os.geteuid() == 0 else None
    workdir = Path(tempfile.mkdtemp(prefix="taskflow-pg-"))
    datadir = workdir / "data"
    datadir.mkdir()
    if user is not None:
        shutil.chown(workdir, user)
        shutil.chown(datadir, user)
    srv = PrivateServer(bindir, datadir, free_port(), user)
    try:
        srv.init()
        srv.start()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.timeout(180)  # longer than the default: a server stop, start and 60 s deadline
async def test_everything_carries_on_after_a_server_restart(server: PrivateServer) -> None:
    clock = FakeClock()
    async with (
        from_url(server.dsn, schema="jobs") as ours,
        from_url(server.dsn, schema="jobs") as worker,
    ):
        task_id = await enqueue_one(ours, clock)
        await ours.pg.listen()
        got: list[TaskOutcome] = []

        async def waiter() -> None:
            got.append(await ours.storage.wait(task_id, timeout=None, now=clock.time()))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                await anyio.to_thread.run_sync(server.stop)
                await anyio.to_thread.run_sync(server.start)
                # Pooled calls on both sides are retried until the server answers again.
                [delivery] = await claim(worker, clock)
                assert await worker.complete([done(delivery, clock)], now=clock.time()) == [True]
            second = await enqueue_one(ours, clock)
            [again] = await claim(worker, clock)
            assert again.task_id == second
        assert got[0].status is TaskStatus.DONE

    conn = await asyncpg.connect(server.dsn)
    try:
        assert await conn.fetchval('SELECT count(*) FROM "jobs_taskflow".tasks') == 2
    finally:
        await conn.close()
