"""The shared command line and measurement helpers of every adapter script.

An adapter is a script, ``python benchmarks/adapters/<name>.py --workload B --n 10000``, run by
the runner in a subprocess with the adapter's own interpreter (a peer's venv or the project's).
It subclasses nothing: it hands `main` one coroutine function per workload it supports, and this
module parses the arguments, runs the chosen workload on uvloop, and prints ONE JSON line:

    {"system": "taskiq-memory", "workload": "B", "n": 10000, "metrics": {"tasks_per_s": 21000.0},
     "notes": ["..."], "versions": {"python": "3.11.7", "uvloop": "0.23.0", "taskiq": "0.13.0"}}

This file is imported by adapters that run in foreign virtual environments, so it uses the
standard library only (plus uvloop when it is installed) and never imports taskflow.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import importlib.metadata
import json
import math
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

WORKLOADS = ("A1", "A2", "B", "E2E", "C", "D")
"""Every workload, in the order the runner reports them."""


@dataclasses.dataclass(frozen=True)
class Params:
    """What one adapter run is asked to measure.

    Attributes:
        workload: One of `WORKLOADS`.
        n: Number of tasks (A1, A2, B, E2E, D).
        concurrency: Tasks run at once by the one worker (B, E2E, C, D).
        batch: Tasks per batched enqueue call (A2, and pre-queueing in B).
        rate: Tasks per second sent in the latency workload C.
        duration_s: How long C sends at `rate`.
        sleep_s: What each task of D sleeps.
        url: Server URL for Redis or PostgreSQL backends (None for in-memory ones).
        profile: Where to dump cProfile stats of the workload (None: no profiling).
        warmup: Before the timed run, run the workload untimed at this fraction of `n` (in
            the same process and loop, on fresh state), so lazy imports, first allocations
            and code paths run once first; 0 skips it. Workload C warms up on its own.
    """

    workload: str
    n: int
    concurrency: int
    batch: int
    rate: float
    duration_s: float
    sleep_s: float
    url: str | None
    profile: str | None = None
    warmup: float = 0.0


Metrics = dict[str, Any]
"""What a workload returns: metric name -> number (or an ``"n/a"`` reason)."""

Workload = Callable[[Params], Awaitable[Metrics]]


class NotApplicable(Exception):
    """Raised by a workload the system under test cannot do (the message says why)."""


def parse_args(argv: Sequence[str] | None = None) -> Params:
    """Parse an adapter's command line into `Params`."""
    parser = argparse.ArgumentParser(description="Run one benchmark workload, print one JSON line.")
    parser.add_argument("--workload", required=True, choices=WORKLOADS)
    parser.add_argument("--n", type=int, default=10_000, help="tasks (default 10000)")
    parser.add_argument("--concurrency", type=int, default=100, help="worker slots (default 100)")
    parser.add_argument("--batch", type=int, default=1_000, help="tasks per batch (default 1000)")
    parser.add_argument("--rate", type=float, default=200.0, help="C: tasks/s (default 200)")
    parser.add_argument("--duration", type=float, default=3.0, help="C: seconds (default 3)")
    parser.add_argument("--sleep", type=float, default=0.01, help="D: task sleep s (default 0.01)")
    parser.add_argument("--url", default=None, help="server URL (Redis/PostgreSQL backends)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.1,
        metavar="FRACTION",
        help="first run the workload untimed at this fraction of n (default 0.1; 0: none)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        metavar="PATH",
        help="run the workload under cProfile and dump pstats to PATH (numbers get slower)",
    )
    args = parser.parse_args(argv)
    return Params(
        workload=args.workload,
        n=args.n,
        concurrency=args.concurrency,
        batch=args.batch,
        rate=args.rate,
        duration_s=args.duration,
        sleep_s=args.sleep,
        url=args.url,
        profile=args.profile,
        warmup=args.warmup,
    )


def per_second(count: int, seconds: float) -> float:
    """Tasks per second, rounded for the report."""
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (``fraction`` 0.5 for p50, 0.99 for p99)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values: the latency workload sent no task")
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def chunks(total: int, size: int) -> list[int]:
    """Sizes of the batches that split `total` tasks into batches of at most `size`."""
    return [min(size, total - start) for start in range(0, total, size)]


async def steady_latencies(
    params: Params, send_and_wait: Callable[[], Awaitable[None]], *, warmup: int = 20
) -> Metrics:
    """Workload C's driver: start one task every ``1/rate`` s for ``duration_s``, each timed
    from just before its enqueue to the moment its producer sees the result.

    Sends are scheduled against absolute times (no drift), and each send runs in its own asyncio
    task so a slow one never delays the next. `warmup` untimed tasks go first.

    Returns:
        ``p50_ms``, ``p99_ms``, ``max_ms`` and the number of timed tasks ``count``.
    """
    for _ in range(warmup):
        await send_and_wait()
    latencies: list[float] = []

    async def timed() -> None:
        start = time.perf_counter()
        await send_and_wait()
        latencies.append(time.perf_counter() - start)

    count = max(1, int(params.rate * params.duration_s))
    interval = 1.0 / params.rate
    loop = asyncio.get_running_loop()
    began = loop.time()
    running: list[asyncio.Task[None]] = []
    for i in range(count):
        delay = began + i * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        running.append(asyncio.create_task(timed()))
    await asyncio.gather(*running)
    return {
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 4),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 4),
        "max_ms": round(max(latencies) * 1000, 4),
        "count": len(latencies),
    }


def versions(*distributions: str) -> dict[str, str]:
    """Python's version and the installed version of each distribution named."""
    found = {"python": platform.python_version()}
    for name in ("uvloop", *distributions):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _run_on_fast_loop(coro_fn: Callable[[], Awaitable[Metrics]]) -> tuple[Metrics, str]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro_fn()), "asyncio"  # type: ignore[arg-type]
    return uvloop.run(coro_fn()), "uvloop"  # type: ignore[arg-type]


def _warmed_up(workload: Workload) -> Workload:
    """`workload` preceded by an untimed run at ``params.warmup`` of its size (not for C)."""

    async def run(params: Params) -> Metrics:
        if params.warmup > 0 and params.workload != "C":
            small = dataclasses.replace(params, n=max(1, int(params.n * params.warmup)))
            await workload(small)
        return await workload(params)

    return run


def _profiled(workload: Workload, path: str) -> Workload:
    """`workload` run under cProfile (imports and interpreter start-up excluded), dumped to
    `path` for ``pstats``."""

    async def run(params: Params) -> Metrics:
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            return await workload(params)
        finally:
            profiler.disable()
            profiler.dump_stats(path)

    return run


def main(
    system: str,
    workloads: dict[str, Workload],
    *,
    distributions: Sequence[str] = (),
    notes: dict[str, str] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """Run the workload the command line names and print its one JSON line on stdout.

    Args:
        system: The system's name as the registry spells it.
        workloads: Workload name -> coroutine function taking `Params`. A workload missing
            here, or raising `NotApplicable`, is reported as ``{"n/a": reason}``.
        distributions: Packages whose versions go into the line (besides Python and uvloop).
        notes: Workload name -> a footnote the report should carry for this system.
        argv: The command line (default ``sys.argv[1:]``).
    """
    params = parse_args(argv)
    workload = workloads.get(params.workload)
    if workload is not None and params.profile:
        workload = _profiled(workload, params.profile)
    if workload is not None:
        workload = _warmed_up(workload)
    line: dict[str, Any] = {"system": system, "workload": params.workload, "n": params.n}
    if workload is None:
        metrics: Metrics = {"n/a": f"{system} has no way to do workload {params.workload}"}
        loop_name = "none"
    else:
        run = workload
        try:
            metrics, loop_name = _run_on_fast_loop(lambda: run(params))
        except NotApplicable as exc:
            metrics, loop_name = {"n/a": str(exc)}, "none"
    line["metrics"] = metrics
    line["loop"] = loop_name
    line["notes"] = [notes[params.workload]] if notes and params.workload in notes else []
    line["versions"] = versions(*distributions)
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
