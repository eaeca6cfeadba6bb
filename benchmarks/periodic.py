"""Start delay of a periodic task across worker processes: the figures of docs/benchmarks.md.

Three ``taskflow worker`` processes run an app with one schedule (``every`` 500 ms by default);
each run writes ``time.time() - slot`` (how late it started after its slot time) to a shared
log with one ``O_APPEND`` write. After ``--duration`` seconds the workers are stopped and the
script prints, per backend, the slots expected and run (each slot must run once), and the p50,
p99 and max start delay in ms (target: p99 within 20 ms).

    redis-server --port 6391 --save "" --appendonly no --daemonize yes --pidfile /tmp/r.pid
    python -m benchmarks.periodic --backend redis,postgres --duration 60 \\
        --redis-url redis://127.0.0.1:6391/0 --postgres-url "$TASKFLOW_TEST_POSTGRES_DSN"

Give it a Redis server of its own: database 15 of it is FLUSHed before and after each run (and
the benchmark's PostgreSQL schemas are dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

APP = """
import os
import time

from taskflow import QueueTasks, TaskContext

app = QueueTasks(name="bench-periodic", broker=os.environ["BENCH_URL"])


@app.periodic(every=float(os.environ["BENCH_EVERY_S"]))
@app.task(name="beat")
async def beat(ctx: TaskContext) -> None:
    late = time.time() - float(ctx.headers["periodic-slot"])
    line = f"{ctx.headers['periodic-slot']} {late:.6f} {os.getpid()}\\n"
    fd = os.open(os.environ["BENCH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
"""

SCHEMA = "bench_periodic"


def backend_url(backend: str, args: argparse.Namespace) -> str:
    if backend == "redis":
        base = args.redis_url.rsplit("/", 1)[0]
        return f"{base}/15"
    sep = "&" if "?" in args.postgres_url else "?"
    return f"{args.postgres_url}{sep}schema={SCHEMA}"


async def clean(url: str) -> None:
    """FLUSHDB the benchmark's Redis database 15, or drop its PostgreSQL schemas."""
    if url.startswith("redis"):
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        try:
            await client.flushdb()
        finally:
            await client.aclose()
        return
    import asyncpg

    conn = await asyncpg.connect(url.rpartition("schema=")[0].rstrip("?&"))
    try:
        rows = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", SCHEMA
        )
        for row in rows:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{row["nspname"]}" CASCADE')
    finally:
        await conn.close()


def start_workers(tmp: Path, env: dict[str, str], n: int) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "taskflow", "--log-level", "WARNING", "worker", "bench:app"],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(n)
    ]
    return procs


def run(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run on one backend: slots expected and run, start delays."""
    url = backend_url(backend, args)
    asyncio.run(clean(url))
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        (tmp / "bench.py").write_text(textwrap.dedent(APP))
        log = tmp / "runs.log"
        env = {
            **os.environ,
            "PYTHONPATH": f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "BENCH_URL": url,
            "BENCH_LOG": str(log),
            "BENCH_EVERY_S": str(args.every),
        }
        procs = start_workers(tmp, env, args.workers)
        try:
            time.sleep(args.warmup)
            measured_from = time.time()
            time.sleep(args.duration)
            measured_to = time.time()
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=30)
        rows = [line.split() for line in log.read_text().splitlines()]
    asyncio.run(clean(url))
    runs = [(float(slot), float(late), pid) for slot, late, pid in rows]
    window = [r for r in runs if measured_from <= r[0] <= measured_to]
    slots = [r[0] for r in window]
    delays_ms = sorted(r[1] * 1000 for r in window)
    expected = int(measured_to / args.every) - int(measured_from / args.every)
    return {
        "backend": backend,
        "slots_expected": expected,
        "slots_run": len(set(slots)),
        "runs": len(slots),
        "workers_that_ran": len({r[2] for r in window}),
        "p50_ms": round(statistics.median(delays_ms), 2),
        "p99_ms": round(delays_ms[max(0, int(len(delays_ms) * 0.99) - 1)], 2),
        "max_ms": round(delays_ms[-1], 2),
        "min_ms": round(delays_ms[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="redis,postgres")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--every", type=float, default=0.5, help="the schedule's interval (s)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--redis-url", default=os.environ.get("TASKFLOW_TEST_REDIS_URL"))
    parser.add_argument("--postgres-url", default=os.environ.get("TASKFLOW_TEST_POSTGRES_DSN"))
    args = parser.parse_args()
    for backend in args.backend.split(","):
        print(json.dumps(run(backend, args)), flush=True)


if __name__ == "__main__":
    main()
