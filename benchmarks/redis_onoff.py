"""What each Redis optimisation buys: the workloads with every mechanism on, and with each one off.

Runs ``benchmarks/adapters/taskflow_redis.py`` once per (round, workload, variant), with
``TASKFLOW_REDIS_OFF=<mechanism>`` for the "off" variants (``taskflow._redis.switches``, which
``benchmarks/redis_onoff.patch`` adds to commit c33362f, the backend as it was measured;
the producer and its worker process both read it). Variants are interleaved within each round
and their order rotates from round to round, so a noisy minute hurts them alike. Besides each
run's own metrics it records the Redis server's CPU time (``INFO cpu``) and the CPU time of
the adapter process and its worker (``RUSAGE_CHILDREN``), both divided by the tasks the run
sent (warm-up included).

    git worktree add /tmp/onoff c33362f
    git -C /tmp/onoff apply "$PWD/benchmarks/redis_onoff.patch"
    PYTHONPATH=/tmp/onoff/src python benchmarks/redis_onoff.py --url redis://127.0.0.1:6391 \
        --rounds 5 --out runs.jsonl
    python benchmarks/redis_onoff.py --url x --summarize benchmarks/results/onoff-both.jsonl

Give it a Redis server of its own: the adapter FLUSHes database 15 of it before every run.
It prints a table of medians and writes every run as one JSON line to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ADAPTER = os.path.join(HERE, "adapters", "taskflow_redis.py")
MECHANISMS = ("qform", "handoff", "early", "due", "hpack", "lane", "takeover")
#: Per workload: the metrics to compare and whether higher is better.
METRICS = {
    "A1": [("tasks_per_s", True)],
    "A2": [("tasks_per_s", True)],
    "B": [("tasks_per_s", True)],
    "E2E": [("tasks_per_s", True)],
    "C": [("p50_ms", False), ("p99_ms", False)],
    "D": [("seconds", False)],
}


def require_switches() -> None:
    """Exit with a message unless this tree reads ``TASKFLOW_REDIS_OFF`` (else every "off" run
    would silently measure the code with everything on)."""
    if importlib.util.find_spec("taskflow._redis.switches") is None:
        sys.exit(
            "this tree has no TASKFLOW_REDIS_OFF switches. They measure the mechanisms of the "
            "Redis backend as it was at commit c33362f (several are gone since): check that "
            "commit out in a worktree of its own (git worktree add /tmp/onoff c33362f), apply "
            'the switches there (git -C /tmp/onoff apply "$PWD/benchmarks/redis_onoff.patch"), '
            "and run this script with that tree first on the path "
            "(PYTHONPATH=/tmp/onoff/src python benchmarks/redis_onoff.py --url ...)"
        )


def server_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tasks_sent(workload: str, args: argparse.Namespace) -> float:
    """Tasks a run sends, warm-up included (C: its untimed 20, then rate x duration)."""
    if workload == "C":
        return 20 + args.rate * args.duration
    return args.n * (1 + args.warmup)


def run_once(workload: str, variant: str, args: argparse.Namespace, client: redis.Redis) -> dict:
    env = dict(os.environ)
    env.pop("TASKFLOW_REDIS_OFF", None)
    if variant != "on":
        env["TASKFLOW_REDIS_OFF"] = variant
    command = [
        sys.executable,
        ADAPTER,
        "--workload",
        workload,
        "--url",
        args.url,
        "--n",
        str(args.n),
        "--warmup",
        str(args.warmup),
        "--rate",
        str(args.rate),
        "--duration",
        str(args.duration),
    ]
    # Empty the benchmark database first: the adapter's own FLUSHDB would otherwise free the
    # previous run's keys (another variant's) inside this run's server CPU time.
    client.flushdb()
    cpu0, kids0, wall0 = server_cpu(client), children_cpu(), time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    cpu1, kids1, wall1 = server_cpu(client), children_cpu(), time.perf_counter()
    row: dict[str, Any] = {"workload": workload, "variant": variant, "wall_s": wall1 - wall0}
    if done.returncode != 0:
        row["error"] = done.stderr[-2000:]
        return row
    line = json.loads(done.stdout.strip().splitlines()[-1])
    row.update(line["metrics"])
    sent = tasks_sent(workload, args)
    row["server_us_per_task"] = (cpu1 - cpu0) * 1e6 / sent
    row["client_us_per_task"] = (kids1 - kids0) * 1e6 / sent
    return row


def effect(on: float, off: float, higher_better: bool) -> float:
    """How much better the mechanism makes the metric, in % (positive: it helps).

    CPU per task is shown as the difference in microseconds instead: each run's interpreter
    start-ups are in both figures, which would shrink a percentage."""
    return (on / off - 1) * 100 if higher_better else (off / on - 1) * 100


def summarize(rows: list[dict], workloads: list[str], variants: list[str]) -> str:
    def values(workload: str, variant: str, key: str) -> list[float]:
        return [
            r[key]
            for r in rows
            if r["workload"] == workload and r["variant"] == variant and key in r
        ]

    out = [
        "| mechanism | workload | metric | on (median, min-max) | off (median, min-max) | effect |",
        "|---|---|---|---|---|---|",
    ]
    for variant in variants:
        if variant == "on":
            continue
        for workload in workloads:
            metrics = METRICS[workload] + [
                ("server_us_per_task", False),
                ("client_us_per_task", False),
            ]
            for key, higher in metrics:
                on, off = values(workload, "on", key), values(workload, variant, key)
                if not on or not off:
                    continue
                m_on, m_off = statistics.median(on), statistics.median(off)
                if key.endswith("_us_per_task"):  # a start-up share is in both: show the gap
                    change = f"{m_off - m_on:+.1f} us"
                else:
                    change = f"{effect(m_on, m_off, higher):+.0f}%"
                out.append(
                    f"| {variant} | {workload} | {key} | {m_on:,.4g} ({min(on):,.3g}-"
                    f"{max(on):,.3g}) | {m_off:,.4g} ({min(off):,.3g}-{max(off):,.3g}) | "
                    f"{change} |"
                )
    return "\n".join(out)


def paired(rows: list[dict], workload: str, variant: str, key: str, higher: bool) -> float | None:
    """The median over rounds of the effect of `variant` against the "on" runs of the same
    round (their median): slow drifts of the machine's load cancel out."""
    effects = []
    for rnd in sorted({r["round"] for r in rows}):
        same = [r for r in rows if r["round"] == rnd and r["workload"] == workload and key in r]
        on = [r[key] for r in same if r["variant"] == "on"]
        off = [r[key] for r in same if r["variant"] == variant]
        if on and off:
            effects.append(effect(statistics.median(on), statistics.median(off), higher))
    return statistics.median(effects) if effects else None


#: The figures of the compact table: (workload, metric, higher is better, label).
HEADLINE = [
    ("B", "tasks_per_s", True, "B /s"),
    ("E2E", "tasks_per_s", True, "E2E /s"),
    ("C", "p50_ms", False, "C p50 ms"),
    ("C", "p99_ms", False, "C p99 ms"),
    ("A2", "tasks_per_s", True, "A2 /s"),
]


def compact(rows: list[dict], variants: list[str], threshold: float = 10.0) -> str:
    """One row per mechanism: per headline figure the median off (on in the header), the
    effect of medians and the median paired effect; the verdict keeps a mechanism whose
    effect is at least `threshold` % by both measures on some figure."""

    def med(workload: str, variant: str, key: str) -> float | None:
        vals = [
            r[key]
            for r in rows
            if r["workload"] == workload and r["variant"] == variant and key in r
        ]
        return statistics.median(vals) if vals else None

    present = [h for h in HEADLINE if med(h[0], "on", h[1]) is not None]
    head = "| mechanism off | " + " | ".join(
        f"{label} (on {med(w, 'on', k):,.4g})" for w, k, _, label in present
    )
    out = [head + " | verdict |", "|---" * (len(present) + 2) + "|"]
    for variant in dict.fromkeys(variants):
        if variant == "on":
            continue
        cells, keep = [], False
        for workload, key, higher, _ in present:
            on, off = med(workload, "on", key), med(workload, variant, key)
            pair = paired(rows, workload, variant, key, higher)
            if on is None or off is None or pair is None:
                cells.append("-")
                continue
            by_median = effect(on, off, higher)
            keep = keep or (by_median >= threshold and pair >= threshold)
            cells.append(f"{off:,.4g}: {by_median:+.0f}% / {pair:+.0f}%")
        verdict = "keep" if keep else "remove"
        out.append(f"| {variant} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="a Redis server of the benchmark's own")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workloads", default="B,E2E,C,A2")
    parser.add_argument("--variants", default="on," + ",".join(MECHANISMS))
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--out", default=None, help="JSON lines of every run")
    parser.add_argument(
        "--summarize", default=None, help="only print the tables of this file of runs"
    )
    args = parser.parse_args()
    workloads = args.workloads.split(",")
    variants = args.variants.split(",")
    if args.summarize:
        with open(args.summarize) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        print(summarize(rows, workloads, variants))
        print()
        print(compact(rows, variants))
        return
    require_switches()
    out_path = args.out or os.path.join(
        HERE, "results", time.strftime("onoff-%Y%m%dT%H%M%S.jsonl", time.gmtime())
    )
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    # The adapter's database (`_servers.dedicated_redis_url`): 15 unless told otherwise.
    bench_db = int(os.environ.get("TASKFLOW_BENCH_REDIS_DB", "15"))
    client = redis.Redis.from_url(urlunsplit(urlsplit(args.url)._replace(path=f"/{bench_db}")))
    rows: list[dict] = []
    total = args.rounds * len(workloads) * len(variants)
    with open(out_path, "w") as out:
        for rnd in range(args.rounds):
            order = variants[rnd % len(variants) :] + variants[: rnd % len(variants)]
            for workload in workloads:
                for variant in order:
                    row = run_once(workload, variant, args, client)
                    row["round"] = rnd
                    rows.append(row)
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    shown = {k: v for k, v in row.items() if k not in ("workload", "variant")}
                    print(
                        f"[{len(rows)}/{total}] {workload} {variant}: {shown}",
                        file=sys.stderr,
                        flush=True,
                    )
    client.close()
    print(summarize(rows, workloads, variants))
    print()
    print(compact(rows, variants))
    print(f"\nruns: {out_path}")


if __name__ == "__main__":
    main()
