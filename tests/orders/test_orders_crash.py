"""Kill the process hosting the Supervisor mid-order (real processes, Redis and PostgreSQL):
another takes over.

A fake clock cannot span processes, so every process here runs on a `ScaledClock`: real time
sped up so that one plan day lasts two real seconds, all processes sharing one anchor. Two
worker processes (this module run as ``python -m tests.orders.test_orders_crash worker ...``)
each host a worker and a Supervisor candidate; the test submits a six-day order from its own
process, SIGKILLs the leader's process after day two, and checks that the survivor takes over
and the order completes with every unit bought exactly once (each unit guards its side effect
with ``ctx.idempotency_key``), none skipped, and the client notified once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskflow import GlobalConfig, QueueTasks, TaskContext
from taskflow.abc import Broker
from taskflow.redis import RedisBroker
from taskflow.supervisor import Order, OrderEvent, OrderState, Plan, Supervisor
from taskflow.supervisor._plan import day_start

SPEED = 43_200.0  # virtual seconds per real second: a day lasts two real seconds
DAYS = 6
PER_DAY = 3
PLAN = Plan.spread(
    dt.date(2026, 12, 1),
    dt.date(2026, 12, 1) + dt.timedelta(days=DAYS - 1),
    per_day=PER_DAY,
    window=(dt.time(9), dt.time(21)),
    tz="Europe/Moscow",
)
REPO = Path(__file__).resolve().parents[2]


class ScaledClock:
    """Real time, sped up `SPEED` times, from a shared anchor (the same in every process)."""

    def __init__(self, anchor_real: float, anchor_virtual: float) -> None:
        self.anchor_real = anchor_real
        self.anchor_virtual = anchor_virtual

    def time(self) -> float:
        return self.anchor_virtual + (time.time() - self.anchor_real) * SPEED

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds) / SPEED)


def make_broker(url: str, namespace: str) -> Broker:
    """A broker on `url`, isolated under `namespace` (a Redis key prefix, a PostgreSQL schema)."""
    if url.startswith("redis"):
        from taskflow import redis

        return redis.from_url(url, prefix=namespace)
    from taskflow import postgres

    return postgres.from_url(url, schema=namespace)


def make_app(url: str, namespace: str, clock: ScaledClock, workdir: Path) -> QueueTasks:
    """The app of every process: the buy task (idempotent), the notifier, scaled settings."""
    config = GlobalConfig(
        lease_s=1.0 * SPEED,
        heartbeat_s=0.25 * SPEED,
        idle_poll_s=0.2 * SPEED,
        shutdown_grace_s=0.5 * SPEED,
        result_ttl_s=1_000 * SPEED,
        max_retry_backoff_s=0.5 * SPEED,
    )
    broker = make_broker(url, namespace)
    app = QueueTasks("crash", broker=broker, clock=clock, config=config)

    @app.task(name="crash.buy")
    async def buy(ctx: TaskContext, unit: int) -> str:
        await anyio.sleep(0.05)  # the purchase takes a moment: a kill can land in the middle
        receipt = workdir / "purchases" / ctx.idempotency_key.replace(":", "_")
        with contextlib.suppress(FileExistsError):  # bought on an earlier attempt
            fd = os.open(receipt, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, f"{unit} {os.getpid()}".encode())
            os.close(fd)
        with open(workdir / "runs.log", "a") as log:
            log.write(f"{unit} {os.getpid()} {ctx.attempt}\n")
        return receipt.name

    @app.task(name="crash.notify")
    async def notify(report: dict[str, Any]) -> None:
        with open(workdir / "notified.log", "a") as log:
            log.write(json.dumps({"state": report["state"], "summary": report["summary"]}) + "\n")

    return app


def make_supervisor(app: QueueTasks) -> Supervisor:
    return Supervisor(
        app,
        notifier="crash.notify",
        lease_ttl=1.0 * SPEED,
        poll=0.1 * SPEED,
        owner=f"pid-{os.getpid()}",
    )


def worker_main(
    url: str, namespace: str, anchor_real: str, anchor_virtual: str, workdir: str
) -> None:
    """Entry point of a worker process: a worker and a Supervisor candidate until SIGTERM."""
    clock = ScaledClock(float(anchor_real), float(anchor_virtual))
    app = make_app(url, namespace, clock, Path(workdir))
    make_supervisor(app).attach()
    app.run_forever(concurrency=4)


def _spawn(args: list[str], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    with open(workdir / f"{name}.log", "wb") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "tests.orders.test_orders_crash", "worker", *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def _leader_pid(app: QueueTasks, clock: ScaledClock) -> int:
    """Wait until a candidate holds the supervisor lease; return its process id."""
    with anyio.fail_after(20):
        while True:
            lease = await app.coordination.get_lease("taskflow:supervisor", now=clock.time())
            if lease is not None:
                return int(lease.owner.removeprefix("pid-"))
            await anyio.sleep(0.05)  # another process's start-up has no event to wait on


async def _event(supervisor: Supervisor, order_id: str, kind: str, job: str | None) -> OrderEvent:
    async for event in supervisor.events(order_id):
        if event.kind == kind and (job is None or event.job == job):
            return event
    raise AssertionError(f"order {order_id} ended without a {kind} event for {job}")


@contextlib.asynccontextmanager
async def _server(kind: str) -> AsyncIterator[tuple[str, str]]:
    """The test server's URL and a fresh namespace on it, deleted afterwards."""
    if kind == "redis":
        from tests.plugins.backend_redis import delete_prefix, random_prefix
        from tests.services import redis_url

        url, prefix = redis_url(), random_prefix()
        yield url, prefix
        async with make_broker(url, prefix) as broker:
            assert isinstance(broker, RedisBroker)
            await delete_prefix(broker)
    else:
        from tests.plugins.backend_postgres import drop_schema, random_schema
        from tests.services import postgres_dsn

        dsn, schema = postgres_dsn(), random_schema()
        yield dsn, schema
        await drop_schema(dsn, schema)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
@pytest.mark.timeout(120)  # longer than the default: its own deadlines add up to 80 s
async def test_killing_the_supervisors_process_mid_order_loses_and_repeats_nothing(
    tmp_path: Path, kind: str
) -> None:
    async with _server(kind) as (url, namespace):
        await _kill_the_leader_mid_order(tmp_path, url, namespace)


async def _kill_the_leader_mid_order(tmp_path: Path, url: str, namespace: str) -> None:
    from tests.services import stop_process

    (tmp_path / "purchases").mkdir()
    anchor_real = time.time()
    anchor_virtual = day_start(PLAN, PLAN.days()[0]) - 4 * SPEED  # day one starts in 4 s
    clock = ScaledClock(anchor_real, anchor_virtual)
    # The schema / prefix is created by the first process to open it; do it here, once.
    async with make_broker(url, namespace):
        pass
    args = [url, namespace, repr(anchor_real), repr(anchor_virtual), str(tmp_path)]
    procs = {name: _spawn(args, tmp_path, name) for name in ("a", "b")}
    app = make_app(url, namespace, clock, tmp_path)
    client = make_supervisor(app)  # submits and follows; hosts no candidate
    try:
        async with app:
            leader = await _leader_pid(app, clock)
            order = Order(task="crash.buy", unit_kwarg="unit", total=DAYS * PER_DAY, plan=PLAN)
            order_id = await client.submit(order)
            with anyio.fail_after(60):
                await _event(client, order_id, "job_finished", PLAN.days()[1].isoformat())
                [victim] = [p for p in procs.values() if p.pid == leader]
                victim.kill()  # SIGKILL: no graceful stop, the lease is left to lapse
                victim.wait()
                await _event(client, order_id, "finished", None)
            status = await client.status(order_id)
            new_leader = await _leader_pid(app, clock)
    finally:
        for proc in procs.values():
            stop_process(proc)

    total = DAYS * PER_DAY
    assert new_leader != leader
    assert status.state is OrderState.SUCCEEDED and status.counts.done == total
    purchases = sorted(p.name for p in (tmp_path / "purchases").iterdir())
    assert purchases == sorted(f"order_{order_id}_unit_{u}" for u in range(total))
    runs = [line.split() for line in (tmp_path / "runs.log").read_text().splitlines()]
    assert sorted({int(unit) for unit, _, _ in runs}) == list(range(total))
    notified = (tmp_path / "notified.log").read_text().splitlines()
    assert len(notified) == 1 and json.loads(notified[0])["state"] == "succeeded"


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker_main(*sys.argv[2:])
