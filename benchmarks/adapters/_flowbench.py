"""The flow benchmark's shape, node log and figures, shared by taskflow's and Celery's adapters.

The workload (``benchmarks/flows.py`` drives it): a chain of `Shape.stages` fan-outs. Stage s
is `Shape.width` shard nodes that run at once, then one join node that waits for all of them
and receives their results; the shards of stage s + 1 wait for the join of stage s. With the
defaults (100 stages of 99 shards) that is 100 x (99 + 1) = 10,000 nodes, submitted in one
call and drained by one worker process.

Every node's body calls `record` with the wall-clock time its body started and ended; a line
per node goes to the file named by ``TASKFLOW_BENCH_FLOW_LOG`` with one ``O_APPEND`` write
(atomic for lines this short, so worker processes can share it). `figures` turns the log into
the metrics: each edge of the graph gives one "parent's outcome to child's start" sample (the
child's start minus the parent's end; for a join, minus its last shard's end), so the figure
covers storing the parent's outcome, making the child ready, the claim, and the worker
starting the child. The first stage's shards have no parent and give no sample (in
taskflow's ``fan-out`` variant their parent is the stage's fanning task).

What lives here: the command line of a flow adapter, the node log, the figures and the one
JSON line an adapter prints. What does not: how a system builds, submits and drains the flow
(``taskflow_flows.py``, ``celery_flows.py``). Standard library only (plus `_harness`): it runs
in Celery's own venv too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from _harness import per_second, percentile, versions

LOG_ENV = "TASKFLOW_BENCH_FLOW_LOG"
"""The environment variable naming the node log file (the worker processes inherit it)."""

Metrics = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Shape:
    """A chain of `stages` fan-outs of `width` shards, each closed by one join."""

    stages: int
    width: int

    @property
    def nodes(self) -> int:
        """Every node of the flow: the shards and one join per stage."""
        return self.stages * (self.width + 1)


@dataclasses.dataclass(frozen=True)
class FlowParams:
    """What one adapter run is asked to do.

    Attributes:
        shape: The flow's stages and width.
        concurrency: Worker slots (taskflow) or pool size (Celery).
        url: The server (None for taskflow's memory backend).
        log: The node log file (the adapter empties it first).
        timeout_s: Limit for draining the flow.
        pool: Celery's worker pool (``prefork``, ``threads``, ``solo``); ignored by taskflow.
        variant: How the system builds the chain (each adapter names its own; the first of
            its list is the default).
    """

    shape: Shape
    concurrency: int
    url: str | None
    log: str
    timeout_s: float
    pool: str
    variant: str = ""


def parse_args(variants: Sequence[str], argv: Sequence[str] | None = None) -> FlowParams:
    """Parse a flow adapter's command line; `variants` are the adapter's ways to build the
    chain (``--variant``, default the first)."""
    parser = argparse.ArgumentParser(description="Submit and drain one flow, print one JSON line.")
    parser.add_argument("--stages", type=int, default=100, help="fan-outs in the chain")
    parser.add_argument("--width", type=int, default=99, help="shards per fan-out")
    parser.add_argument("--concurrency", type=int, default=100, help="worker slots")
    parser.add_argument("--url", default=None, help="server URL (none: memory)")
    parser.add_argument("--log", required=True, help="node log file (emptied first)")
    parser.add_argument("--timeout", type=float, default=600.0, help="drain limit, seconds")
    parser.add_argument("--pool", default="prefork", help="Celery's worker pool")
    parser.add_argument("--variant", default=variants[0], choices=variants)
    args = parser.parse_args(argv)
    if args.stages < 1 or args.width < 1:
        parser.error("--stages and --width must be at least 1")
    return FlowParams(
        shape=Shape(args.stages, args.width),
        concurrency=args.concurrency,
        url=args.url,
        log=args.log,
        timeout_s=args.timeout,
        pool=args.pool,
        variant=args.variant,
    )


_log_fd: int | None = None
_log_pid: int | None = None


def record(kind: str, stage: int, index: int, started: float) -> None:
    """Log one node's body: `kind` ``s`` (shard) or ``j`` (join), its place, its start (a
    ``time.time()`` taken first thing in the body) and now as its end (the body's work is
    over: what follows is the system's business of storing its outcome and starting its
    children, which the figures measure).

    The file is opened once per process (a forked pool child opens its own).
    """
    global _log_fd, _log_pid
    ended = time.time()
    if _log_fd is None or _log_pid != os.getpid():
        _log_fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _log_pid = os.getpid()
    os.write(_log_fd, f"{kind} {stage} {index} {started:.6f} {ended:.6f}\n".encode())


def empty_log(path: str) -> None:
    """Create or truncate the node log, and point `LOG_ENV` at it for worker processes."""
    with open(path, "w"):
        pass
    os.environ[LOG_ENV] = path


@dataclasses.dataclass
class NodeLog:
    """The node log read back: each node's (start, end) by kind, and the nodes seen twice.

    Kinds: ``s`` a shard (stage, index), ``j`` a stage's join, ``f`` a stage's fanning task
    (taskflow's ``fan-out`` variant: it runs ``ctx.fan_out``; its outcome is its join's).
    """

    shards: dict[tuple[int, int], tuple[float, float]] = dataclasses.field(default_factory=dict)
    joins: dict[int, tuple[float, float]] = dataclasses.field(default_factory=dict)
    fanners: dict[int, tuple[float, float]] = dataclasses.field(default_factory=dict)
    repeated: int = 0

    @classmethod
    def read(cls, path: str) -> NodeLog:
        """Parse the log file at `path`."""
        log = cls()
        with open(path) as lines:
            for line in lines:
                kind, stage, index, started, ended = line.split()
                log.add(kind, int(stage), int(index), (float(started), float(ended)))
        return log

    def add(self, kind: str, stage: int, index: int, times: tuple[float, float]) -> None:
        """Count one line (the first line of a node wins; a repeat is counted)."""
        table: dict[Any, tuple[float, float]]
        key: Any = stage
        if kind == "s":
            table, key = self.shards, (stage, index)
        else:
            table = self.joins if kind == "j" else self.fanners
        self.repeated += key in table
        table.setdefault(key, times)

    def missing(self, shape: Shape, fanned: bool) -> int:
        """How many nodes of `shape` (with a fanning task per stage if `fanned`) never ran."""
        expected = shape.nodes + (shape.stages if fanned else 0)
        return expected - len(self.shards) - len(self.joins) - len(self.fanners)

    def edges(self, shape: Shape) -> dict[str, list[float]]:
        """The parent's-outcome-to-child's-start samples, in seconds, by kind of edge:
        ``fan_out`` from a shard's parent (the previous stage's join, or the stage's fanning
        task) to the shard, ``fan_in`` from a stage's last shard to its join, ``chain`` from a
        join to the next stage's fanning task (``fan-out`` variant only)."""
        found: dict[str, list[float]] = {"fan_out": [], "fan_in": [], "chain": []}
        for stage in range(shape.stages):
            shard_times = [self.shards[(stage, i)] for i in range(shape.width)]
            parent = self.fanners.get(stage) or self.joins.get(stage - 1)
            if parent is not None:
                found["fan_out"] += [started - parent[1] for started, _ in shard_times]
            found["fan_in"].append(self.joins[stage][0] - max(ended for _, ended in shard_times))
            if stage in self.fanners and stage > 0:
                found["chain"].append(self.fanners[stage][0] - self.joins[stage - 1][1])
        return found


def _ms(values: list[float], fraction: float) -> float | None:
    return round(percentile(values, fraction) * 1000, 3) if values else None


def figures(
    shape: Shape,
    log_path: str,
    clock: tuple[float, float, float],
    *,
    fanned: bool = False,
) -> Metrics:
    """The run's metrics from its node log and the producer's clock readings.

    Args:
        shape: The flow's shape.
        log_path: The node log.
        clock: ``time.time()`` just before the submit call, how long that call took, and
            ``time.time()`` when the producer saw the last join's result.
        fanned: The flow has a fanning task per stage (taskflow's ``fan-out`` variant).

    Raises:
        RuntimeError: a node never ran (the run is not a measurement).
    """
    submitted, submit_s, done = clock
    log = NodeLog.read(log_path)
    missing = log.missing(shape, fanned)
    nodes = shape.nodes + (shape.stages if fanned else 0)
    if missing:
        raise RuntimeError(f"{missing} of {nodes} nodes never ran")
    edges = log.edges(shape)
    every = edges["fan_out"] + edges["fan_in"] + edges["chain"]
    metrics: Metrics = {
        "nodes": nodes,
        "nodes_per_s": per_second(nodes, done - submitted),
        "submit_s": round(submit_s, 4),
        "total_s": round(done - submitted, 4),
        "edge_p50_ms": _ms(every, 0.50),
        "edge_p99_ms": _ms(every, 0.99),
    }
    for kind, samples in edges.items():
        if samples:
            metrics[f"{kind}_p50_ms"] = _ms(samples, 0.50)
            metrics[f"{kind}_p99_ms"] = _ms(samples, 0.99)
    metrics["repeated_nodes"] = log.repeated
    return metrics


def main(
    system: str,
    run: Callable[[FlowParams], Metrics],
    *,
    variants: Sequence[str],
    distributions: Sequence[str] = (),
    notes: Sequence[str] = (),
    argv: Sequence[str] | None = None,
) -> None:
    """Parse the command line, empty the node log, run the flow once, print one JSON line."""
    params = parse_args(variants, argv)
    empty_log(params.log)
    line: dict[str, Any] = {
        "system": system,
        "variant": params.variant,
        "stages": params.shape.stages,
        "width": params.shape.width,
        "metrics": run(params),
        "notes": list(notes),
        "versions": versions(*distributions),
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
