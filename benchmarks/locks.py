"""Declared locks beside workload B, on each backend: the figures of docs/benchmarks.md.

Runs ``benchmarks/adapters/taskflow_locks.py`` (one fresh process per run) for B, BL and LX on
each backend asked for, repetitions interleaved (B and BL alternate which goes first), and
prints per backend the median rate of B and of BL, their ratio (target: BL at least 0.5 of
B), and the median p50 and p99 of LX, the delay from the last shared holder's end to the start
of the exclusive task waiting behind it (target: p99 under 10 ms).

    redis-server --port 6391 --save "" --appendonly no --daemonize yes --pidfile /tmp/r.pid
    python -m benchmarks.locks --backend memory,redis,postgres --reps 3 \\
        --redis-url redis://127.0.0.1:6391/0 --postgres-url "$TASKFLOW_TEST_POSTGRES_DSN"

Give it a Redis server of its own: database 15 of it is FLUSHed before every run (and the
benchmark's PostgreSQL schema dropped). Every run is also written as a JSON line to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ADAPTER = os.path.join(HERE, "adapters", "taskflow_locks.py")


def run_one(backend: str, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    """One adapter run: its metrics."""
    command = [sys.executable, ADAPTER, "--backend", backend, "--workload", workload]
    command += ["--n", str(args.n), "--rounds", str(args.rounds)]
    url = {"redis": args.redis_url, "postgres": args.postgres_url}.get(backend)
    if url:
        command += ["--url", url]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900)
    metrics: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])["metrics"]
    return metrics


def measure(backend: str, args: argparse.Namespace, out: Any) -> dict[str, float]:
    """Every repetition of one backend; the medians."""
    runs: dict[str, list[dict[str, Any]]] = {"B": [], "BL": [], "LX": []}
    for rep in range(args.reps):
        order = ["B", "BL"] if rep % 2 == 0 else ["BL", "B"]
        for workload in [*order, "LX"]:
            metrics = run_one(backend, workload, args)
            runs[workload].append(metrics)
            line = {"backend": backend, "rep": rep, "workload": workload, "metrics": metrics}
            out.write(json.dumps(line) + "\n")
            print(f"  {backend} rep {rep + 1} {workload}: {metrics}", file=sys.stderr)
    b = statistics.median(m["tasks_per_s"] for m in runs["B"])
    bl = statistics.median(m["tasks_per_s"] for m in runs["BL"])
    return {
        "B": b,
        "BL": bl,
        "ratio": bl / b,
        "p50": statistics.median(m["p50_ms"] for m in runs["LX"]),
        "p99": statistics.median(m["p99_ms"] for m in runs["LX"]),
        "max": max(m["max_ms"] for m in runs["LX"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="memory", help="memory,redis,postgres")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=10_000, help="tasks of B and BL")
    parser.add_argument("--rounds", type=int, default=200, help="rounds of LX per repetition")
    parser.add_argument("--redis-url", default=os.environ.get("TASKFLOW_TEST_REDIS_URL"))
    parser.add_argument("--postgres-url", default=os.environ.get("TASKFLOW_TEST_POSTGRES_DSN"))
    parser.add_argument("--out", default="benchmarks/results/locks.json")
    args = parser.parse_args()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    table = []
    with open(args.out, "a") as out:
        for backend in args.backend.split(","):
            table.append((backend, measure(backend, args, out)))
    print("| backend | B /s | BL /s | BL / B | LX p50 ms | LX p99 ms | LX max ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for backend, m in table:
        print(
            f"| {backend} | {m['B']:,.0f} | {m['BL']:,.0f} | {m['ratio']:.2f} | "
            f"{m['p50']:.2f} | {m['p99']:.2f} | {m['max']:.2f} |"
        )


if __name__ == "__main__":
    main()
