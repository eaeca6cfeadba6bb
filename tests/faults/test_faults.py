"""Faults injected into a steady workload, on Redis and PostgreSQL servers of the suite's own.

Each case starts a private server, two worker processes and a producer (`_harness.FaultRun`),
injects one fault once a quarter of the work has run, and checks the invariants: nothing
accepted is lost, one terminal outcome per task, no body run after its outcome, attempts
within retries + 1, and no gap for a resuming event reader. Each prints its row of the fault
table (``docs/guarantees.md``); ``TASKFLOW_FAULT_TABLE=<file>`` collects them.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.faults._harness import LEASE_S, FaultRun, run_with_fault
from tests.services import (
    PrivatePostgres,
    free_port,
    private_postgres,
    redis_url,
    start_redis_server,
    stop_process,
)

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(180)]


@dataclass
class PrivateRedis:
    """A redis-server of this test's own that keeps an append-only file, so that it can be
    restarted (or SIGKILLed) and come back with what it had acknowledged."""

    port: int
    datadir: Path
    fsync: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = start_redis_server(
            self.port,
            args=("--appendonly", "yes", "--appendfsync", self.fsync, "--dir", str(self.datadir)),
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop it by its pid: SIGTERM writes the append-only file and exits; SIGKILL does not."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[PrivateRedis]:
    redis_url()  # skip (or fail) with the usual reason when Redis is not set up
    datadir = tmp_path / "redis"
    datadir.mkdir()
    server = PrivateRedis(free_port(), datadir, getattr(request, "param", "everysec"))
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            stop_process(server.proc)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


async def _sigkill_a_worker(run: FaultRun) -> None:
    victim = run.workers[0]
    await run.until_busy(victim.pid)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    run.workers[0] = run.start_worker()


async def _sigstop_a_worker_past_its_lease(run: FaultRun) -> None:
    """Paused for twice the lease: its tasks go elsewhere; its late writes must be refused."""
    victim = run.workers[0]
    await run.until_busy(victim.pid)
    os.kill(victim.pid, signal.SIGSTOP)
    await anyio.sleep(2 * LEASE_S)  # the fault itself: a pause longer than the lease
    os.kill(victim.pid, signal.SIGCONT)


WORKER_FAULTS = {
    "sigkill-worker": _sigkill_a_worker,
    "sigstop-worker": _sigstop_a_worker_past_its_lease,
}


@pytest.mark.redis
@pytest.mark.parametrize("fault", sorted(WORKER_FAULTS))
async def test_redis_worker_faults(fault: str, private_redis: PrivateRedis, tmp_path: Path) -> None:
    async with FaultRun(tmp_path, private_redis.url, fault=fault, backend="redis") as run:
        await run_with_fault(run, WORKER_FAULTS[fault], burst=True)


@pytest.mark.postgres
@pytest.mark.parametrize("fault", sorted(WORKER_FAULTS))
async def test_postgres_worker_faults(
    fault: str, private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    async with FaultRun(tmp_path, private_pg.dsn, fault=fault, backend="postgres") as run:
        await run_with_fault(run, WORKER_FAULTS[fault], burst=True)


@pytest.mark.redis
async def test_redis_restart(private_redis: PrivateRedis, tmp_path: Path) -> None:
    """SHUTDOWN by SIGTERM (the append-only file is written), 1 s away, then started again."""

    async def restart(run: FaultRun) -> None:
        private_redis.stop(signal.SIGTERM)
        await anyio.sleep(1.0)  # the fault itself: the server is away for a second
        private_redis.start()

    async with FaultRun(tmp_path, private_redis.url, fault="redis-restart", backend="redis") as run:
        await run_with_fault(run, restart)


@pytest.mark.redis
@pytest.mark.parametrize("private_redis", ["always"], indirect=True)
async def test_redis_sigkill_with_fsync_always(private_redis: PrivateRedis, tmp_path: Path) -> None:
    """SIGKILL of the server. With ``appendfsync always`` every acknowledged write is on disk,
    so nothing may be lost; with the default ``everysec`` up to a second of acknowledged
    writes can be (Redis's documented trade-off), which this suite does not claim to survive."""

    async def kill(run: FaultRun) -> None:
        private_redis.stop(signal.SIGKILL)
        private_redis.start()

    async with FaultRun(
        tmp_path, private_redis.url, fault="redis-sigkill (fsync always)", backend="redis"
    ) as run:
        await run_with_fault(run, kill)


@pytest.mark.redis
async def test_redis_client_kill_loop(private_redis: PrivateRedis, tmp_path: Path) -> None:
    """Every client connection (commands and pub/sub) killed, 20 times, 0.1 s apart."""

    async def client_kills(run: FaultRun) -> None:
        async with aioredis.Redis.from_url(private_redis.url) as admin:
            for _ in range(20):
                await admin.client_kill_filter(_type="normal", skipme=True)
                await admin.client_kill_filter(_type="pubsub", skipme=True)
                await anyio.sleep(0.1)  # the fault's own rhythm

    async with FaultRun(
        tmp_path, private_redis.url, fault="client-kill x20", backend="redis"
    ) as run:
        await run_with_fault(run, client_kills)


@pytest.mark.postgres
async def test_postgres_restart(private_pg: PrivatePostgres, tmp_path: Path) -> None:
    """A fast shutdown (every session disconnected), then the server started again."""

    async def restart(run: FaultRun) -> None:
        private_pg.stop()
        private_pg.start()

    async with FaultRun(
        tmp_path, private_pg.dsn, fault="postgres-restart", backend="postgres"
    ) as run:
        await run_with_fault(run, restart)


@pytest.mark.postgres
async def test_postgres_terminate_backend_loop(private_pg: PrivatePostgres, tmp_path: Path) -> None:
    """Every other session terminated (``pg_terminate_backend``), 10 times, 0.3 s apart."""

    async def terminations(run: FaultRun) -> None:
        admin = await asyncpg.connect(private_pg.dsn)
        try:
            for _ in range(10):
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
                await anyio.sleep(0.3)  # the fault's own rhythm
        finally:
            await admin.close()

    async with FaultRun(
        tmp_path, private_pg.dsn, fault="pg_terminate_backend x10", backend="postgres"
    ) as run:
        await run_with_fault(run, terminations)
