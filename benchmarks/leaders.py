"""Leader takeover after SIGKILL, with three candidate processes: the figures of
docs/benchmarks.md.

Three processes campaign for one role with ``app.leadership("bench.gen", ttl=LEASE)``; each
prints the wall time at which it starts to lead. Every round, once a leader leads, the
benchmark waits a random part of the renewal interval (so the kill falls anywhere between two
renewals), reads the leader's lease from the store (its ``expires_at``), SIGKILLs the leader,
starts a fresh candidate in its place (three again), and times the next "leads" line:

* takeover: from the SIGKILL to the new leader leading (target: within the lease + 100 ms);
* past expiry: from the dead leader's lease end to the new leader leading (how late after the
  role became free it was taken: the campaign's own delay).

    redis-server --port 6391 --save "" --appendonly no --daemonize yes --pidfile /tmp/r.pid
    python -m benchmarks.leaders --backend redis,postgres --rounds 20 \\
        --redis-url redis://127.0.0.1:6391/0 --postgres-url "$TASKFLOW_TEST_POSTGRES_DSN"

Give it a Redis server of its own: database 15 of it is FLUSHed first (and the benchmark's
PostgreSQL schema dropped after). Every round is also written as a JSON line to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from taskflow import QueueTasks

ROLE = "bench.gen"
SCHEMA = "bench_leaders"

CANDIDATE = """
import asyncio, os, sys, time

from taskflow import QueueTasks

async def main() -> None:
    app = QueueTasks(name="bench", broker=sys.argv[1])
    async with app, app.leadership("bench.gen", ttl=float(sys.argv[2])) as term:
        print("leads", term.token, repr(time.time()), flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


class Candidates:
    """The candidate processes, their "leads" lines in one queue: (pid, token, wall time)."""

    def __init__(self, url: str, lease_s: float) -> None:
        self.url, self.lease_s = url, lease_s
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self.leads: queue.Queue[tuple[int, int, float]] = queue.Queue()

    def spawn(self) -> None:
        command = [sys.executable, "-c", CANDIDATE, self.url, str(self.lease_s)]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.procs[proc.pid] = proc
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            _, token, when = line.split()
            self.leads.put((proc.pid, int(token), float(when)))

    def kill(self, pid: int) -> float:
        """SIGKILL one candidate; the wall time of the kill."""
        proc = self.procs.pop(pid)
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return killed_at

    def stop(self) -> None:
        for pid in list(self.procs):
            self.kill(pid)


async def measure(url: str, args: argparse.Namespace, out: Any) -> list[dict[str, float]]:
    candidates = Candidates(url, args.lease)
    rounds: list[dict[str, float]] = []
    app = QueueTasks(name="bench", broker=url)
    try:
        async with app:
            for _ in range(3):
                candidates.spawn()
            pid, token, _ = await asyncio.to_thread(candidates.leads.get, timeout=60)
            for n in range(args.rounds):
                await asyncio.sleep(random.uniform(0, args.lease / 3))
                lease = await app.leader_of(ROLE)
                assert lease is not None and lease.token == token, (lease, token)
                killed_at = candidates.kill(pid)
                candidates.spawn()
                pid, new_token, led_at = await asyncio.to_thread(
                    candidates.leads.get, timeout=args.lease + 30
                )
                assert new_token > token
                token = new_token
                row = {
                    "round": n,
                    "takeover_ms": (led_at - killed_at) * 1000,
                    "past_expiry_ms": (led_at - lease.expires_at) * 1000,
                }
                rounds.append(row)
                out.write(json.dumps({"url": url.split("?")[0], "lease_s": args.lease, **row}))
                out.write("\n")
                print(f"  {row}", file=sys.stderr)
    finally:
        candidates.stop()
    return rounds


def reset(url: str) -> None:
    """FLUSHDB the Redis database (15), or drop the benchmark's PostgreSQL schema."""
    if url.startswith("redis"):
        import redis

        redis.Redis.from_url(url).flushdb()
        return
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(url.split("?")[0])
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        finally:
            await conn.close()

    asyncio.run(drop())


def backend_url(backend: str, args: argparse.Namespace) -> str:
    if backend == "redis":
        return str(args.redis_url).rsplit("/", 1)[0] + "/15"
    sep = "&" if "?" in args.postgres_url else "?"
    return f"{args.postgres_url}{sep}schema={SCHEMA}"


def summary(rounds: list[dict[str, float]]) -> dict[str, float]:
    takeover = sorted(r["takeover_ms"] for r in rounds)
    past = sorted(r["past_expiry_ms"] for r in rounds)
    return {
        "p50": statistics.median(takeover),
        "max": takeover[-1],
        "past_p50": statistics.median(past),
        "past_max": past[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="redis,postgres", help="redis,postgres")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--lease", type=float, default=2.0, help="the role's ttl, seconds")
    parser.add_argument("--redis-url", default=os.environ.get("TASKFLOW_TEST_REDIS_URL"))
    parser.add_argument("--postgres-url", default=os.environ.get("TASKFLOW_TEST_POSTGRES_DSN"))
    parser.add_argument("--out", default="benchmarks/results/leaders.json")
    args = parser.parse_args()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    table = []
    with open(args.out, "a") as out:
        for backend in args.backend.split(","):
            url = backend_url(backend, args)
            reset(url)
            try:
                table.append((backend, summary(asyncio.run(measure(url, args, out)))))
            finally:
                reset(url)
    limit = args.lease * 1000 + 100
    print(
        f"| backend | takeover p50 ms | takeover max ms | past expiry p50 ms | "
        f"past expiry max ms | target (max <= {limit:.0f} ms) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for backend, m in table:
        verdict = "met" if m["max"] <= limit else "missed"
        print(
            f"| {backend} | {m['p50']:.0f} | {m['max']:.0f} | {m['past_p50']:.1f} | "
            f"{m['past_max']:.1f} | {verdict} |"
        )


if __name__ == "__main__":
    main()
