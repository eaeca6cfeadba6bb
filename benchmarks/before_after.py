"""Before and after a change: taskflow's own adapters run against two source trees, in one run.

    git worktree add /tmp/before <commit before the change>
    python -m benchmarks.before_after --baseline /tmp/before --backend memory,redis,postgres

Each taskflow adapter in *this* tree (``benchmarks/adapters/taskflow_<backend>.py``, the same
workload code for both) runs once with ``PYTHONPATH=<baseline>/src`` ("before") and once with this
tree's ``src`` ("after") per repetition; the two alternate and swap order each repetition, so a
noisy minute hurts both alike. The table gives each side's median and after/before: for
throughput a ratio above 0.90 holds, for latency one below 1.10 (within 10%, or better).

The baseline must accept the adapters' public calls (`QueueTasks`, `taskflow.postgres.app_schema`).
Every run is also written as one JSON line per adapter run to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from .registry import BACKENDS, SYSTEMS, System
from .runner import RESULTS_DIR, Settings, adapter_command, run_adapter

HERE_SRC = Path(__file__).resolve().parent.parent / "src"
#: (workload, metric, higher is better) compared by default: the issue's "speed must hold" set.
METRICS = {
    "B": [("tasks_per_s", True)],
    "E2E": [("tasks_per_s", True)],
    "C": [("p50_ms", False), ("p99_ms", False)],
    "A1": [("tasks_per_s", True)],
    "A2": [("tasks_per_s", True)],
    "D": [("seconds", False)],
}


@dataclasses.dataclass(frozen=True)
class Tree:
    """One side of the comparison: a label and the ``src`` directory put first on the path."""

    label: str
    src: Path

    def env(self) -> dict[str, str]:
        """The environment an adapter (and the worker processes it starts) runs with."""
        return {**os.environ, "PYTHONPATH": str(self.src)}


def check_imports_from(tree: Tree) -> None:
    """Exit with a message unless ``import taskflow`` under `tree`'s environment loads its tree."""
    done = subprocess.run(
        [sys.executable, "-c", "import taskflow; print(taskflow.__file__)"],
        capture_output=True,
        text=True,
        env=tree.env(),
        check=False,
    )
    loaded = Path(done.stdout.strip()).resolve() if done.returncode == 0 else None
    if loaded is None or tree.src.resolve() not in loaded.parents:
        sys.exit(
            f"{tree.label}: `import taskflow` loaded {loaded or done.stderr.strip()[-200:]}, "
            f"not {tree.src}; is --baseline a checkout with a src/taskflow directory?"
        )


def ours(backend: str) -> System:
    """taskflow's adapter for `backend`."""
    return next(s for s in SYSTEMS if s.backend == backend and s.name == f"taskflow-{backend}")


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.before_after", description=__doc__)
    parser.add_argument("--baseline", type=Path, required=True, help="checkout of the 'before'")
    parser.add_argument("--backend", default="memory,redis,postgres", help="comma-separated")
    parser.add_argument("--workloads", default="B,E2E,C", help="default: B,E2E,C")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--redis-url", default=os.environ.get("TASKFLOW_BENCH_REDIS_URL"))
    parser.add_argument("--postgres-url", default=os.environ.get("TASKFLOW_BENCH_POSTGRES_DSN"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "before_after.jsonl")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backend.split(",")]
    bad = [b for b in backends if b not in BACKENDS]
    workloads = tuple(w.strip() for w in args.workloads.split(","))
    bad += [w for w in workloads if w not in METRICS]
    if bad:
        parser.error(f"unknown backend(s) or workload(s): {', '.join(bad)}")
    for backend, url in (("redis", args.redis_url), ("postgres", args.postgres_url)):
        if backend in backends and not url:
            parser.error(f"--{backend}-url is required for {backend} (it is flushed/dropped)")
    settings = Settings(
        systems=[ours(b) for b in backends],
        reps=args.reps,
        n=args.n,
        d_n=2_000,
        concurrency=args.concurrency,
        batch=1_000,
        rate=args.rate,
        duration_s=args.duration,
        workloads=workloads,
        out=args.out,
        timeout_s=args.timeout,
        urls={"memory": None, "redis": args.redis_url, "postgres": args.postgres_url},
        quick=False,
    )
    return args, settings


def run(settings: Settings, trees: tuple[Tree, Tree]) -> list[dict[str, Any]]:
    """Every (repetition, system, workload) on both trees, alternating their order."""
    runs = []
    steps = [
        (rep, s, w)
        for rep in range(settings.reps)
        for s in settings.systems
        for w in settings.workloads
    ]
    for i, (rep, system, workload) in enumerate(steps, 1):
        order = trees if rep % 2 == 0 else trees[::-1]
        for tree in order:
            print(f"[{i}/{len(steps)}] {system.name} {workload} {tree.label}", file=sys.stderr)
            command = adapter_command(Path(sys.executable), system, workload, settings)
            line = run_adapter(command, settings.timeout_s, tree.env())
            line.update(system=system.name, workload=workload, rep=rep, tree=tree.label)
            runs.append(line)
    return runs


def table(runs: list[dict[str, Any]], settings: Settings) -> str:
    """Markdown table: backend, metric, before and after medians, after/before, verdict."""
    lines = ["| backend | metric | before | after | after/before | within 10% |", "|---" * 6 + "|"]
    for system in settings.systems:
        for workload in settings.workloads:
            for metric, higher in METRICS[workload]:
                side = {}
                for label in ("before", "after"):
                    values = [
                        r["metrics"][metric]
                        for r in runs
                        if r["system"] == system.name
                        and r["workload"] == workload
                        and r["tree"] == label
                        and isinstance(r.get("metrics", {}).get(metric), (int, float))
                    ]
                    side[label] = statistics.median(values) if values else None
                before, after = side["before"], side["after"]
                if before is None or after is None:
                    lines.append(
                        f"| {system.backend} | {workload} {metric} | {before} | {after} "
                        "| - | no data |"
                    )
                    continue
                ratio = after / before
                holds = ratio >= 0.9 if higher else ratio <= 1.1
                lines.append(
                    f"| {system.backend} | {workload} {metric} | {before:,.3f} | {after:,.3f} "
                    f"| {ratio:.2f} | {'yes' if holds else 'NO'} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args, settings = parse(argv)
    trees = (Tree("before", args.baseline.resolve() / "src"), Tree("after", HERE_SRC))
    for tree in trees:
        check_imports_from(tree)
    runs = run(settings, trees)
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    with settings.out.open("a") as out:
        for line in runs:
            out.write(json.dumps(line) + "\n")
    errors = [r for r in runs if "error" in r]
    for r in errors:
        print(f"error: {r['system']} {r['workload']} {r['tree']}: {r['error']}", file=sys.stderr)
    print(f"Medians of {settings.reps} repetitions, n={settings.n}, c={settings.concurrency}")
    print(table(runs, settings))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
