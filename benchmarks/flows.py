"""A flow of 10,000 nodes (a chain of fan-outs) submitted and drained: the figures of
docs/benchmarks.md ("Flows"), taskflow on each backend beside Celery's canvas on Redis.

The flow is `stages` fan-outs of `width` shards, each closed by a join that receives its
shards' results; the next stage's shards wait for that join (``adapters/_flowbench.py``). Each
(repetition, system) runs in a fresh process (``adapters/taskflow_flows.py`` in this
interpreter, ``adapters/celery_flows.py`` in Celery's own venv, ``benchmarks/.venvs/
celery-redis``, made on first use by `runner.ensure_interpreter` as for every peer). Figures:
nodes per second (from the submit call to the producer seeing the last join's result), the
submit call's time, and the time from a parent's outcome to its child's start (p50, p99: over
every edge, and apart for the fan-in edges, last shard -> join, and the fan-out edges, join ->
next shards). The table shows the medians over ``--reps`` and the ratios to Celery.

    python -m benchmarks.flows --reps 3 --postgres-url "$TASKFLOW_TEST_POSTGRES_DSN"

Redis: without ``--redis-url`` each run gets a redis-server of its own, started on a free port
and stopped by its pid after the run (``redis-server`` must be on the PATH); with it, database
15 of that server is FLUSHed before each run. PostgreSQL: the schema ``taskflow_bench_flows``
is dropped before each run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from .registry import Backend, Role, System
from .runner import RESULTS_DIR, ensure_interpreter, machine_description

CELERY_PINS: Final = ("celery[redis]==5.7.0",)


@dataclasses.dataclass(frozen=True)
class FlowSystem:
    """One column of the flow benchmark: a system, the way it builds the chain, its server.

    Attributes:
        name: Unique name, used with ``--systems`` and in the table.
        backend: The server it runs on.
        adapter: The adapter script in ``benchmarks/adapters/``.
        variant: The adapter's ``--variant``.
        role: ``ours`` or ``peer``.
        requirements: Pins of its own venv (empty: this interpreter).
        venv: Name of that venv (both Celery variants share one).
    """

    name: str
    backend: Backend
    adapter: str
    variant: str
    role: Role = "ours"
    requirements: tuple[str, ...] = ()
    venv: str = ""

    @property
    def system(self) -> System:
        """The registry's view of it, for `runner.ensure_interpreter`."""
        return System(
            self.venv or self.name, self.backend, self.adapter, self.role, self.requirements
        )


def _ours(backend: Backend) -> tuple[FlowSystem, FlowSystem]:
    return (
        FlowSystem(f"taskflow-{backend}", backend, "taskflow_flows.py", "graph"),
        FlowSystem(f"taskflow-{backend}-fan-out", backend, "taskflow_flows.py", "fan-out"),
    )


def _celery(name: str, variant: str) -> FlowSystem:
    return FlowSystem(
        name, "redis", "celery_flows.py", variant, "peer", CELERY_PINS, venv="celery-redis"
    )


FLOW_SYSTEMS: Final[tuple[FlowSystem, ...]] = (
    *_ours("memory"),
    *_ours("redis"),
    *_ours("postgres"),
    _celery("celery-redis", "stepwise"),
    _celery("celery-redis-chain", "chain"),
)
BASELINE: Final = "celery-redis"
"""The system the ratios are taken against."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The command line, resolved."""

    systems: list[FlowSystem]
    reps: int
    stages: int
    width: int
    chain_stages: int
    concurrency: int
    celery_concurrency: int
    celery_pool: str
    redis_url: str | None
    postgres_url: str | None
    timeout_s: float
    out: Path


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m benchmarks.flows`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.flows",
        description="Submit and drain a flow of fan-outs on taskflow's backends and Celery.",
    )
    names = ", ".join(s.name for s in FLOW_SYSTEMS)
    parser.add_argument("--systems", default=None, help=f"comma-separated (default all): {names}")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--stages", type=int, default=100, help="fan-outs in the chain (100)")
    parser.add_argument("--width", type=int, default=99, help="shards per fan-out (99)")
    parser.add_argument(
        "--chain-stages",
        type=int,
        default=10,
        help="stages of celery-redis-chain, whose messages grow with the stages (default 10)",
    )
    parser.add_argument("--concurrency", type=int, default=100, help="taskflow's worker slots")
    parser.add_argument(
        "--celery-concurrency", type=int, default=2, help="Celery's pool size (default 2)"
    )
    parser.add_argument("--celery-pool", default="prefork", help="Celery's pool (prefork)")
    parser.add_argument(
        "--redis-url", default=None, help="a Redis server (default: a private one per run)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TASKFLOW_BENCH_POSTGRES_DSN")
        or os.environ.get("TASKFLOW_TEST_POSTGRES_DSN"),
        help="default $TASKFLOW_BENCH_POSTGRES_DSN or $TASKFLOW_TEST_POSTGRES_DSN",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="per run, seconds (900)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: results/)")
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Resolve the command line (exits with a usage error on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    systems = list(FLOW_SYSTEMS)
    if args.systems:
        wanted = [name.strip() for name in args.systems.split(",")]
        unknown = sorted(set(wanted) - {s.name for s in FLOW_SYSTEMS})
        if unknown:
            parser.error(f"unknown system(s) {unknown}; known: {[s.name for s in FLOW_SYSTEMS]}")
        systems = [s for s in FLOW_SYSTEMS if s.name in wanted]
    if min(args.stages, args.width, args.chain_stages, args.reps) < 1 or args.width < 2:
        parser.error("--stages, --chain-stages and --reps must be >= 1, --width >= 2")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Settings(
        systems=systems,
        reps=args.reps,
        stages=args.stages,
        width=args.width,
        chain_stages=args.chain_stages,
        concurrency=args.concurrency,
        celery_concurrency=args.celery_concurrency,
        celery_pool=args.celery_pool,
        redis_url=args.redis_url,
        postgres_url=args.postgres_url,
        timeout_s=args.timeout,
        out=args.out or RESULTS_DIR / f"flows-{stamp}.json",
    )


def shape_of(system: FlowSystem, settings: Settings) -> tuple[int, int]:
    """(stages, width) of `system`'s flow: the same node count for every system, except
    Celery's whole chain, run at ``--chain-stages`` (its bytes grow with the square of the
    stages); the fan-out variant has a fanning node per stage, so one shard fewer."""
    if system.variant == "chain":
        return min(settings.stages, settings.chain_stages), settings.width
    if system.variant == "fan-out":
        return settings.stages, settings.width - 1
    return settings.stages, settings.width


# -- one run --------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on the loopback now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def private_redis(workdir: str) -> Iterator[str]:
    """A redis-server of its own on a free port for the block; stopped by its pid after.

    Raises:
        RuntimeError: it did not start (its log's tail says why).
    """
    port = free_port()
    pidfile, logfile = os.path.join(workdir, "redis.pid"), os.path.join(workdir, "redis.log")
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--daemonize", "yes", "--pidfile", pidfile]
    subprocess.run([*command, "--logfile", logfile], check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while not (_answers(port) and os.path.exists(pidfile)):
        if time.monotonic() > deadline:
            tail = Path(logfile).read_text()[-500:] if os.path.exists(logfile) else ""
            raise RuntimeError(f"redis-server on port {port} did not start: {tail}")
        time.sleep(0.02)
    pid = int(Path(pidfile).read_text())
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(pid)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _stop(pid: int) -> None:
    """SIGTERM the server by its pid and wait (up to 10 s) until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def adapter_command(
    python: Path, system: FlowSystem, settings: Settings, url: str | None, log: str
) -> list[str]:
    """The command line of one adapter run."""
    stages, width = shape_of(system, settings)
    celery = system.adapter == "celery_flows.py"
    command = [str(python), str(system.system.adapter_path), "--variant", system.variant]
    command += ["--stages", str(stages), "--width", str(width), "--log", log]
    command += ["--timeout", str(settings.timeout_s)]
    command += [
        "--concurrency",
        str(settings.celery_concurrency if celery else settings.concurrency),
    ]
    if celery:
        command += ["--pool", settings.celery_pool]
    return command + (["--url", url] if url else [])


def run_adapter(command: list[str], timeout_s: float) -> dict[str, Any]:
    """Run one adapter in a session of its own and return its JSON line, or ``{"error": ...}``.

    On a timeout the whole session is killed by the adapter's own pid (its process group):
    the worker processes it started go too, never to drain a later run's queue.
    """
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"error": f"timed out after {timeout_s:g} s: {' '.join(command)}"}
    lines = [line for line in out.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        tail = err.strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail) or 'no output'}"}
    try:
        parsed: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"last stdout line is not JSON: {lines[-1][:200]!r}"}
    return parsed


def run_once(system: FlowSystem, python: Path, settings: Settings) -> dict[str, Any]:
    """One adapter run on a server of its own (Redis) or the given one; its JSON line, with the
    load averages before and after."""
    with tempfile.TemporaryDirectory(prefix="taskflow-flows-") as workdir:
        log = os.path.join(workdir, "nodes.log")
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            url = settings.postgres_url if system.backend == "postgres" else None
            if system.backend == "redis":
                url = settings.redis_url or stack.enter_context(private_redis(workdir))
            command = adapter_command(python, system, settings, url, log)
            line = run_adapter(command, settings.timeout_s + 60)
        line.update(
            system=system.name,
            wall_s=round(time.perf_counter() - started, 3),
            load=[round(load_before, 2), round(os.getloadavg()[0], 2)],
        )
        return line


def run_all(settings: Settings, log: TextIO) -> list[dict[str, Any]]:
    """Every (repetition, system), interleaved so a noisy minute hurts every system alike."""
    pythons = {s.name: ensure_interpreter(s.system, log) for s in settings.systems}
    runs: list[dict[str, Any]] = []
    total = settings.reps * len(settings.systems)
    for rep in range(1, settings.reps + 1):
        for system in settings.systems:
            log.write(f"[{len(runs) + 1}/{total}] {system.name} rep {rep}\n")
            log.flush()
            line = run_once(system, pythons[system.name], settings)
            line["rep"] = rep
            if "error" in line:
                log.write(f"  error: {line['error']}\n")
            runs.append(line)
    return runs


# -- summary --------------------------------------------------------------------------------

COLUMNS: Final = (
    ("nodes", "nodes"),
    ("nodes_per_s", "nodes/s"),
    ("submit_s", "submit s"),
    ("edge_p50_ms", "edge p50 ms"),
    ("edge_p99_ms", "edge p99 ms"),
    ("fan_in_p50_ms", "fan-in p50 ms"),
    ("fan_in_p99_ms", "fan-in p99 ms"),
    ("fan_out_p50_ms", "fan-out p50 ms"),
    ("fan_out_p99_ms", "fan-out p99 ms"),
)


def medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """system -> metric -> median over its successful runs (``error``: the first error if none
    succeeded)."""
    table: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(run["system"] for run in runs):
        mine = [run for run in runs if run["system"] == name]
        ok = [run["metrics"] for run in mine if "metrics" in run]
        if not ok:
            table[name] = {"error": next(run["error"] for run in mine if "error" in run)}
            continue
        keys = dict.fromkeys(key for metrics in ok for key in metrics)
        table[name] = {
            key: statistics.median(m[key] for m in ok if m.get(key) is not None)
            for key in keys
            if any(m.get(key) is not None for m in ok)
        }
    return table


def ratios(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """For each system but the baseline: nodes/s over Celery's, and Celery's edge p50 and p99
    over its own (above 1: faster than Celery)."""
    base = table.get(BASELINE, {})
    out: dict[str, dict[str, float]] = {}
    for name, mine in table.items():
        if name == BASELINE or "error" in mine or "error" in base or not base:
            continue
        out[name] = {
            "nodes_per_s": mine["nodes_per_s"] / base["nodes_per_s"],
            "edge_p50_ms": base["edge_p50_ms"] / mine["edge_p50_ms"],
            "edge_p99_ms": base["edge_p99_ms"] / mine["edge_p99_ms"],
        }
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value >= 100:
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.3g}" if value < 1 else f"{value:.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render_table(settings: Settings, table: dict[str, dict[str, Any]]) -> str:
    """The markdown table: a row per system, its medians and its ratios to Celery."""
    compared = ratios(table)
    header = ["system", "backend", "variant", *(label for _, label in COLUMNS)]
    header += [f"nodes/s vs {BASELINE}", f"edge p50 vs {BASELINE}", f"edge p99 vs {BASELINE}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for system in settings.systems:
        mine = table.get(system.name, {})
        cells = [system.name, system.backend, system.variant]
        if "error" in mine:
            cells += ["error"] + ["-"] * (len(COLUMNS) - 1)
        else:
            cells += [_cell(mine.get(key)) for key, _ in COLUMNS]
        ratio = compared.get(system.name, {})
        cells += [f"{ratio[k]:.1f}x" if k in ratio else "-" for k in ratios_keys()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios_keys() -> tuple[str, str, str]:
    """The metrics `ratios` compares, in column order."""
    return ("nodes_per_s", "edge_p50_ms", "edge_p99_ms")


def render_report(
    settings: Settings,
    runs: list[dict[str, Any]],
    table: dict[str, dict[str, Any]],
    head: dict[str, Any],
) -> str:
    """The whole stdout report."""
    loads = [value for run in runs for value in run.get("load", [])]
    errors = [f"- {r['system']} rep {r['rep']}: {r['error']}" for r in runs if "error" in r]
    parts = [
        f"## Flows, {head['date']}",
        "",
        f"Machine: {head['machine']}; load average {min(loads, default=0):.1f} to "
        f"{max(loads, default=0):.1f} during the runs. Medians of {settings.reps} "
        f"repetition(s); a flow of {settings.stages} fan-outs of {settings.width} shards and "
        f"a join each ({settings.stages * (settings.width + 1):,} nodes; celery-redis-chain: "
        f"{min(settings.stages, settings.chain_stages)} stages). taskflow's worker: concurrency "
        f"{settings.concurrency}; Celery's: --pool {settings.celery_pool} --concurrency "
        f"{settings.celery_concurrency}.",
        "",
        f"Command: `{head['command']}`",
        "",
        render_table(settings, table),
    ]
    if errors:
        parts += ["", "Errors:", *errors]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the flow benchmark; the table on stdout, progress on stderr, JSON saved.

    Returns:
        0 when every run succeeded, 1 when any failed (the table still shows the rest), 2
        when a venv could not be made.
    """
    settings = parse_settings(argv)
    head = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "command": " ".join(
            ["python -m benchmarks.flows", *(sys.argv[1:] if argv is None else argv)]
        ),
    }
    try:
        runs = run_all(settings, sys.stderr)
    except RuntimeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    table = medians(runs)
    report = render_report(settings, runs, table, head)
    sys.stdout.write(report + "\n")
    document = {**head, "settings": _jsonable(settings), "medians": table}
    document |= {"ratios": ratios(table), "runs": runs, "table": report}
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    settings.out.write_text(json.dumps(document, indent=2) + "\n")
    sys.stderr.write(f"saved {settings.out}\n")
    return 1 if any("error" in run for run in runs) else 0


def _jsonable(settings: Settings) -> dict[str, Any]:
    fields = dataclasses.asdict(settings)
    fields["systems"] = [s.name for s in settings.systems]
    fields["out"] = str(settings.out)
    fields.pop("postgres_url")  # may carry a password
    return fields


if __name__ == "__main__":
    sys.exit(main())
