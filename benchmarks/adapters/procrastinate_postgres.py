"""procrastinate on PostgreSQL (psycopg 3), in its own venv.

Worker: procrastinate's CLI, ``procrastinate --app=procrastinate_postgres.app worker
--concurrency=100`` (its defaults otherwise: LISTEN/NOTIFY wake-ups, one job per fetch). Its
tables live in schema ``procrastinate_bench`` (the connection's ``search_path``), dropped and
re-created with procrastinate's own schema before each run. procrastinate stores no results: the
producer "sees the result" when the job's status is ``succeeded``, polled with
``get_job_status_async`` every 10 ms, one waiter at a time in enqueue order. Batch enqueue:
``batch_defer_async`` (one statement).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import _harness
import _peers
import _servers
import psycopg
from _harness import Params
from procrastinate import App, PsycopgConnector
from procrastinate.jobs import Status

SCHEMA = _servers.bench_schema("procrastinate_bench")
URL_ENV = "BENCH_POSTGRES_URL"
STATUS_POLL_S = 0.01


def make_app(dsn: str) -> App:
    """A procrastinate app on `dsn` with the tasks ``noop`` and ``nap``."""
    made = App(connector=PsycopgConnector(conninfo=dsn))

    @made.task(name="noop")
    async def noop() -> None:
        return None

    @made.task(name="nap")
    async def nap(seconds: float) -> None:
        await asyncio.sleep(seconds)

    return made


# Only the worker process (which imports this module) needs the module-level app.
app = make_app(os.environ.get(URL_ENV, "")) if __name__ != "__main__" else None


class ProcrastinateClient:
    """`_peers.Client` for procrastinate."""

    wait_limit = 1

    def __init__(self) -> None:
        self.dsn = ""
        self.app: App | None = None
        self.opened: Any = None

    async def open(self, params: Params) -> None:
        base = _servers.postgres_url(params.url)
        async with await psycopg.AsyncConnection.connect(base, autocommit=True) as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            await conn.execute(f"CREATE SCHEMA {SCHEMA}")
        self.dsn = _servers.with_search_path(base, SCHEMA)
        self.app = make_app(self.dsn)
        self.opened = self.app.open_async()
        await self.opened.__aenter__()
        await self.app.schema_manager.apply_schema_async()

    async def close(self) -> None:
        if self.opened is not None:
            await self.opened.__aexit__(None, None, None)

    async def send(self, name: str, args: list[Any]) -> Any:
        assert self.app is not None
        kwargs = {"seconds": args[0]} if name == "nap" else {}
        return await self.app.tasks[name].defer_async(**kwargs)

    async def send_many(self, count: int) -> list[Any]:
        assert self.app is not None
        return list(await self.app.tasks["noop"].batch_defer_async(*({} for _ in range(count))))

    async def wait(self, handle: Any) -> None:
        assert self.app is not None
        manager = self.app.job_manager
        while True:
            status = await manager.get_job_status_async(handle)
            if status == Status.SUCCEEDED:
                return
            if status in (Status.FAILED, Status.CANCELLED, Status.ABORTED):
                raise RuntimeError(f"procrastinate job {handle} ended {status}")
            await asyncio.sleep(STATUS_POLL_S)

    def worker_command(self, params: Params) -> list[str]:
        os.environ[URL_ENV] = self.dsn
        procrastinate = os.path.join(os.path.dirname(sys.executable), "procrastinate")
        return [
            procrastinate,
            "--app=procrastinate_postgres.app",
            "worker",
            f"--concurrency={params.concurrency}",
        ]


NOTES = {
    "C": "procrastinate: stores no results; the producer polls the job's status every 10 ms.",
}

if __name__ == "__main__":
    _harness.main(
        "procrastinate-postgres",
        _peers.workloads(ProcrastinateClient),
        distributions=("procrastinate", "psycopg"),
        notes=NOTES,
    )
