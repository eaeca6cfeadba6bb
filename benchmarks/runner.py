"""The benchmark runner behind ``python -m benchmarks``.

What lives here: the command line, the venvs of peers (``benchmarks/.venvs/<name>``, made on first
use from the pins in `registry`), running each adapter in a subprocess with its own interpreter
(one process per system, workload and repetition, so no run warms or pollutes the next), the
progress bar on stderr, medians over repetitions, ratios to the best peer and to the floor, the
markdown table on stdout and the JSON file under ``benchmarks/results/``. What a workload does is
in ``adapters/_harness.py`` and the adapters themselves.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from .registry import BACKENDS, SYSTEMS, System, select

BENCH_DIR: Final = Path(__file__).parent
VENVS_DIR: Final = BENCH_DIR / ".venvs"
RESULTS_DIR: Final = BENCH_DIR / "results"
WORKLOADS: Final = ("A1", "A2", "B", "E2E", "C", "D")


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: a metric of a workload, and which way is better."""

    workload: str
    metric: str
    label: str
    unit: str
    higher_is_better: bool


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything one runner invocation was asked for (the command line, resolved)."""

    systems: list[System]
    reps: int
    n: int
    d_n: int
    concurrency: int
    batch: int
    rate: float
    duration_s: float
    workloads: tuple[str, ...]
    out: Path
    timeout_s: float
    urls: dict[str, str | None]
    quick: bool
    warmup: float = 0.1


def table_rows(settings: Settings) -> list[Row]:
    """The table's rows, labelled with this run's sizes."""
    n, c = f"{settings.n:,}", settings.concurrency
    return [
        Row("A1", "tasks_per_s", f"A1 enqueue {n}, one by one", "tasks/s", True),
        Row("A2", "tasks_per_s", f"A2 enqueue {n}, batches of {settings.batch:,}", "tasks/s", True),
        Row("B", "tasks_per_s", f"B process {n} queued, c={c}", "tasks/s", True),
        Row("E2E", "tasks_per_s", f"E2E enqueue {n} + await all, c={c}", "tasks/s", True),
        Row("C", "p50_ms", f"C latency p50 @ {settings.rate:g}/s", "ms", False),
        Row("C", "p99_ms", f"C latency p99 @ {settings.rate:g}/s", "ms", False),
        Row("D", "seconds", f"D {settings.d_n:,} x sleep(10 ms), c={c}", "s", False),
    ]


# -- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m benchmarks`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run taskflow's benchmarks against its peers and a bare-asyncio floor.",
    )
    parser.add_argument(
        "--backend", default="memory", choices=(*BACKENDS, "all"), help="default: memory"
    )
    parser.add_argument(
        "--systems",
        default=None,
        help="comma-separated names (default: all of the backend); "
        f"known: {', '.join(s.name for s in SYSTEMS)}",
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="default: all six")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    parser.add_argument("--n", type=int, default=None, help="tasks of A, B, E2E (default 10000)")
    parser.add_argument("--d-n", type=int, default=None, help="tasks of D (default 2000)")
    parser.add_argument("--concurrency", type=int, default=100, help="worker slots (default 100)")
    parser.add_argument("--batch", type=int, default=1000, help="A2 batch size (default 1000)")
    parser.add_argument("--rate", type=float, default=200.0, help="C: tasks/s (default 200)")
    parser.add_argument("--duration", type=float, default=None, help="C: seconds (default 3)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: n=1000, D 200 tasks, C 0.5 s, 1 repetition (explicit values win)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.1,
        metavar="FRACTION",
        help="each adapter run first does the workload untimed at this fraction of n "
        "(default 0.1; 0: none)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: results/)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per adapter run, seconds")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("TASKFLOW_BENCH_REDIS_URL")
        or os.environ.get("TASKFLOW_TEST_REDIS_URL"),
        help="for Redis systems (default $TASKFLOW_BENCH_REDIS_URL or $TASKFLOW_TEST_REDIS_URL)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TASKFLOW_BENCH_POSTGRES_DSN")
        or os.environ.get("TASKFLOW_TEST_POSTGRES_DSN"),
        help="for PostgreSQL systems (default $TASKFLOW_BENCH_POSTGRES_DSN or "
        "$TASKFLOW_TEST_POSTGRES_DSN)",
    )
    return parser


def _pick(given: Any, quick: bool, quick_value: Any, default: Any) -> Any:
    if given is not None:
        return given
    return quick_value if quick else default


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Resolve the command line into `Settings` (exits with a usage error on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.systems.split(",")] if args.systems else None
    try:
        systems = select(args.backend, names)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    workloads = tuple(w.strip() for w in args.workloads.split(","))
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Settings(
        systems=systems,
        reps=_pick(args.reps, args.quick, 1, 3),
        n=_pick(args.n, args.quick, 1_000, 10_000),
        d_n=_pick(args.d_n, args.quick, 200, 2_000),
        concurrency=args.concurrency,
        batch=args.batch,
        rate=args.rate,
        duration_s=_pick(args.duration, args.quick, 0.5, 3.0),
        workloads=workloads,
        out=args.out if args.out is not None else RESULTS_DIR / f"{stamp}.json",
        timeout_s=args.timeout,
        urls={"memory": None, "redis": args.redis_url, "postgres": args.postgres_url},
        quick=args.quick,
        warmup=args.warmup,
    )


# -- interpreters ---------------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    """The interpreter inside a venv (POSIX or Windows layout)."""
    posix = venv / "bin" / "python"
    return posix if posix.exists() or os.name != "nt" else venv / "Scripts" / "python.exe"


def _pins_digest(system: System) -> str:
    text = "\n".join(system.requirements) + f"\npython {platform.python_version()}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_interpreter(system: System, log: TextIO) -> Path:
    """The interpreter that runs `system`'s adapter, creating its venv first if needed.

    A venv is made with ``python -m venv`` and filled with ``python -m pip install`` (so the
    machine's pip configuration applies); a stamp file records the pins it was made from, and a
    venv whose pins changed is made again.

    Raises:
        RuntimeError: venv creation or pip failed (the message carries pip's output).
    """
    if not system.own_venv:
        return Path(sys.executable)
    venv = VENVS_DIR / system.name
    stamp = venv / ".benchmark-pins"
    python = venv_python(venv)
    digest = _pins_digest(system)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    log.write(f"creating {venv} with {' '.join(system.requirements)} (first use)\n")
    log.flush()
    _check_call([sys.executable, "-m", "venv", "--clear", str(venv)], f"venv for {system.name}")
    _check_call(
        [
            str(venv_python(venv)),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            *system.requirements,
        ],
        f"pip install for {system.name}",
    )
    stamp.write_text(digest + "\n")
    return venv_python(venv)


def _check_call(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {done.returncode}): {' '.join(command)}\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}\n"
            "Check that pip can reach the package index (pip config list), or delete "
            f"{VENVS_DIR} and run again."
        )


# -- running adapters -----------------------------------------------------------------------


def adapter_command(python: Path, system: System, workload: str, settings: Settings) -> list[str]:
    """The command line of one adapter run."""
    command = [
        str(python),
        str(system.adapter_path),
        "--workload",
        workload,
        "--n",
        str(settings.d_n if workload == "D" else settings.n),
        "--concurrency",
        str(settings.concurrency),
        "--batch",
        str(settings.batch),
        "--rate",
        str(settings.rate),
        "--duration",
        str(settings.duration_s),
        "--warmup",
        str(settings.warmup),
    ]
    url = settings.urls.get(system.backend)
    if url:
        command += ["--url", url]
    return command


def run_adapter(
    command: list[str], timeout_s: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one adapter and return its JSON line, or ``{"error": ...}`` saying what went wrong.

    `env` replaces the process environment (default: this one's).
    """
    env = {**(os.environ if env is None else env), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:g} s: {' '.join(command)}"}
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-5:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail) or 'no output'}"}
    try:
        parsed: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"last stdout line is not JSON: {lines[-1][:200]!r}"}
    return parsed


class ProgressBar:
    """``[#####.....] 12/36 taskiq-memory B rep 2`` on stderr, redrawn in place on a terminal."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.width = width
        self.done = 0
        self.in_place = stream.isatty()

    def show(self, label: str) -> None:
        """Draw the bar with `label` for the step about to run."""
        filled = self.width * self.done // self.total
        text = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {label}"
        if self.in_place:
            self.stream.write(f"\r\x1b[2K{text}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def step(self) -> None:
        """Count one finished step."""
        self.done += 1

    def finish(self) -> None:
        """Draw the full bar and end the line."""
        self.show("done")
        if self.in_place:
            self.stream.write("\n")
            self.stream.flush()


def run_all(settings: Settings, log: TextIO) -> list[dict[str, Any]]:
    """Run every (repetition, system, workload), interleaved so drift spreads over all systems."""
    pythons = {s.name: ensure_interpreter(s, log) for s in settings.systems}
    steps = [
        (rep, system, workload)
        for rep in range(1, settings.reps + 1)
        for system in settings.systems
        for workload in settings.workloads
    ]
    bar = ProgressBar(len(steps), log)
    runs: list[dict[str, Any]] = []
    for rep, system, workload in steps:
        bar.show(f"{system.name} {workload} rep {rep}")
        command = adapter_command(pythons[system.name], system, workload, settings)
        started = time.perf_counter()
        line = run_adapter(command, settings.timeout_s)
        line.update(system=system.name, workload=workload, rep=rep)
        line["wall_s"] = round(time.perf_counter() - started, 3)
        runs.append(line)
        bar.step()
    bar.finish()
    return runs


# -- summarising ----------------------------------------------------------------------------


def medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """system -> workload -> metric -> median over the successful repetitions.

    A metric that is not a number (an ``"n/a"`` reason) is kept as it is; a workload whose
    every repetition failed gets ``{"error": <first error>}``.
    """
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault((run["system"], run["workload"]), []).append(run)
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for (system, workload), group in grouped.items():
        ok = [run["metrics"] for run in group if "metrics" in run]
        summary: dict[str, Any] = {}
        if not ok:
            summary["error"] = next(run["error"] for run in group if "error" in run)
        for key in ok[0] if ok else ():
            values = [m[key] for m in ok if key in m]
            numeric = all(isinstance(v, int | float) for v in values)
            summary[key] = statistics.median(values) if numeric else values[0]
        result.setdefault(system, {})[workload] = summary
    return result


def spread(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """system -> workload -> metric -> ``[min, max]`` over the successful repetitions."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in runs:
        for key, value in run.get("metrics", {}).items():
            if not isinstance(value, int | float):
                continue
            bounds = out.setdefault(run["system"], {}).setdefault(run["workload"], {})
            low, high = bounds.get(key, [value, value])
            bounds[key] = [min(low, value), max(high, value)]
    return out


def _value(summary: dict[str, dict[str, Any]], row: Row) -> float | None:
    value = summary.get(row.workload, {}).get(row.metric)
    return float(value) if isinstance(value, int | float) else None


def comparisons(
    settings: Settings, table: dict[str, dict[str, dict[str, Any]]], rows: list[Row]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """For each of our systems and row: ``vs_best_peer`` (>1: better than the best peer of the
    same backend) and ``of_floor`` (the fraction of the floor's performance), or None.
    """
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for ours in (s for s in settings.systems if s.role == "ours"):
        peers = [s for s in settings.systems if s.role == "peer" and s.backend == ours.backend]
        floor = floor_of(ours.backend, settings.systems)
        mine = table.get(ours.name, {})
        per_row: dict[str, dict[str, float | None]] = {}
        for row in rows:
            value = _value(mine, row)
            peer_values = [v for p in peers if (v := _value(table.get(p.name, {}), row))]
            floor_value = _value(table.get(floor.name, {}), row) if floor else None
            per_row[row.label] = {
                "vs_best_peer": _ratio(value, peer_values, row.higher_is_better),
                "of_floor": _ratio(
                    value, [floor_value] if floor_value else [], row.higher_is_better
                ),
            }
        out[ours.name] = per_row
    return out


def floor_of(backend: str, systems: Sequence[System]) -> System | None:
    """The floor that `backend`'s systems are measured against: that backend's own floor (a
    bare loop over the same server), else the first floor selected, else None."""
    floors = [s for s in systems if s.is_floor]
    return next((s for s in floors if s.backend == backend), floors[0] if floors else None)


def _ratio(value: float | None, others: list[float], higher_is_better: bool) -> float | None:
    if not value or not others:
        return None
    if higher_is_better:
        return value / max(others)
    return min(others) / value


# -- targets of the memory backend ----------------------------------------------------------


def target_checks(
    settings: Settings,
    table: dict[str, dict[str, dict[str, Any]]],
    compared: dict[str, dict[str, dict[str, float | None]]],
    rows: list[Row],
) -> list[dict[str, Any]]:
    """The issue's targets for taskflow's memory backend, each with its measured value and verdict.

    E2E at least 2x the best in-memory peer and at least 15% of the floor; C p50 under 0.2 ms;
    D at most 0.25 s. Only checked when taskflow-memory ran at full size (not ``--quick``).
    """
    if "taskflow-memory" not in table or settings.quick:
        return []
    by_key = {(row.workload, row.metric): row for row in rows}
    mine = table["taskflow-memory"]
    ratios = compared.get("taskflow-memory", {})
    e2e = by_key[("E2E", "tasks_per_s")].label
    checks: list[tuple[str, Any, Callable[[float], bool]]] = [
        ("E2E >= 2x best peer", ratios.get(e2e, {}).get("vs_best_peer"), lambda v: v >= 2.0),
        ("E2E >= 15% of floor", ratios.get(e2e, {}).get("of_floor"), lambda v: v >= 0.15),
        ("C p50 < 0.2 ms", mine.get("C", {}).get("p50_ms"), lambda v: v < 0.2),
        ("D <= 0.25 s", mine.get("D", {}).get("seconds"), lambda v: v <= 0.25),
    ]
    return [
        {
            "target": name,
            "measured": value,
            "met": meets(float(value)) if isinstance(value, int | float) else None,
        }
        for name, value, meets in checks
    ]


# -- rendering ------------------------------------------------------------------------------


def _fmt(value: Any, unit: str) -> str:
    if isinstance(value, int | float):
        if unit == "tasks/s":
            return f"{value:,.0f}"
        return f"{value:.3f}" if value >= 0.1 else f"{value:.4f}"
    return "n/a" if value is None else str(value)


def _cell(summary: dict[str, dict[str, Any]], row: Row) -> str:
    workload = summary.get(row.workload)
    if workload is None:
        return "-"
    if "error" in workload:
        return "error"
    if "n/a" in workload:
        return "n/a"
    return _fmt(workload.get(row.metric), row.unit)


def render_table(
    settings: Settings,
    table: dict[str, dict[str, dict[str, Any]]],
    compared: dict[str, dict[str, dict[str, float | None]]],
    rows: list[Row],
    systems: list[System],
) -> str:
    """One markdown table: a row per metric, a column per system, then ours vs peers and floor."""
    ours = [s for s in systems if s.role == "ours"]
    header = ["workload", "unit", *(s.name for s in systems)]
    for system in ours:
        header += [f"{system.name} vs best peer", f"{system.name} of floor"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if row.workload not in settings.workloads:
            continue
        cells = [row.label, row.unit, *(_cell(table.get(s.name, {}), row) for s in systems)]
        for system in ours:
            ratio = compared.get(system.name, {}).get(row.label, {})
            best, floor = ratio.get("vs_best_peer"), ratio.get("of_floor")
            cells += [
                f"{best:.2f}x" if best else "-",
                f"{floor:.0%}" if floor else "-",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def footnotes(runs: list[dict[str, Any]], systems: list[System]) -> list[str]:
    """Each adapter's notes, n/a reasons and errors, once each, in system order."""
    names = [s.name for s in systems]
    seen: list[str] = []
    for run in sorted(runs, key=lambda r: names.index(r["system"]) if r["system"] in names else 0):
        if run["system"] not in names:
            continue
        texts = list(run.get("notes", []))
        if "n/a" in run.get("metrics", {}):
            texts.append(f"{run['system']} {run['workload']}: n/a, {run['metrics']['n/a']}.")
        if "error" in run:
            texts.append(f"{run['system']} {run['workload']} rep {run['rep']}: {run['error']}")
        seen += [t for t in texts if t not in seen]
    return seen


def render_report(
    settings: Settings,
    runs: list[dict[str, Any]],
    table: dict[str, dict[str, dict[str, Any]]],
    compared: dict[str, dict[str, dict[str, float | None]]],
    checks: list[dict[str, Any]],
    header: dict[str, Any],
) -> str:
    """The whole stdout report: a heading, one table per backend that ran, notes and targets."""
    rows = table_rows(settings)
    parts = [
        f"## taskflow benchmarks, {header['date']}",
        "",
        f"Machine: {header['machine']}. Medians of {settings.reps} repetition(s), each "
        "system and workload in a process of its own after an untimed warm-up at "
        f"{settings.warmup:.0%} of n; "
        "throughput in tasks/s (higher is better), latency and D in ms/s (lower is better). "
        "'vs best peer' > 1 means taskflow is better; 'of floor' is the share of the "
        "performance of the backend's floor (the bare loop doing the same work).",
        "",
        f"Command: `{header['command']}`",
    ]
    for backend in BACKENDS:
        members = [s for s in settings.systems if s.backend == backend and not s.is_floor]
        floor = floor_of(backend, settings.systems)
        if floor is not None and (members or floor.backend == backend):
            members.append(floor)
        if not members:
            continue
        parts += ["", f"### {backend} backend", ""]
        parts.append(render_table(settings, table, compared, rows, members))
    notes = footnotes(runs, settings.systems)
    if notes:
        parts += ["", "Notes:", *(f"- {note}" for note in notes)]
    if checks:
        parts += ["", "Targets (taskflow-memory):"]
        for check in checks:
            verdict = {True: "met", False: "MISSED", None: "not measured"}[check["met"]]
            measured = check["measured"]
            shown = f"{measured:.3g}" if isinstance(measured, int | float) else "-"
            parts.append(f"- {check['target']}: {shown} ({verdict})")
    return "\n".join(parts)


def machine_description() -> str:
    """``2 cores, Linux x86_64, Python 3.11.7`` for this machine."""
    return (
        f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; print the table on stdout, progress on stderr; save the JSON.

    Returns:
        0 when every adapter run succeeded, 1 when any failed (the table still shows the rest).
    """
    settings = parse_settings(argv)
    header = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "command": " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)]),
    }
    try:
        runs = run_all(settings, sys.stderr)
    except RuntimeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    table = medians(runs)
    rows = table_rows(settings)
    compared = comparisons(settings, table, rows)
    checks = target_checks(settings, table, compared, rows)
    report = render_report(settings, runs, table, compared, checks, header)
    sys.stdout.write(report + "\n")
    save_json(settings, header, runs, table, compared, checks, report)
    sys.stderr.write(f"saved {settings.out}\n")
    return 1 if any("error" in run for run in runs) else 0


def save_json(
    settings: Settings,
    header: dict[str, Any],
    runs: list[dict[str, Any]],
    table: dict[str, dict[str, dict[str, Any]]],
    compared: dict[str, dict[str, dict[str, float | None]]],
    checks: list[dict[str, Any]],
    report: str,
) -> None:
    """Write everything measured, and how, to ``settings.out``."""
    document = {
        **header,
        "settings": {
            "reps": settings.reps,
            "n": settings.n,
            "d_n": settings.d_n,
            "concurrency": settings.concurrency,
            "batch": settings.batch,
            "rate": settings.rate,
            "duration_s": settings.duration_s,
            "workloads": list(settings.workloads),
            "quick": settings.quick,
            "warmup": settings.warmup,
        },
        "systems": {
            s.name: {
                "backend": s.backend,
                "role": s.role,
                "requirements": list(s.requirements),
                "adapter": str(s.adapter_path.relative_to(BENCH_DIR.parent)),
                "versions": next(
                    (r["versions"] for r in runs if r["system"] == s.name and "versions" in r), {}
                ),
            }
            for s in settings.systems
        },
        "medians": table,
        "spread": spread(runs),
        "comparisons": compared,
        "targets": checks,
        "runs": runs,
        "table": report,
    }
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    settings.out.write_text(json.dumps(document, indent=2) + "\n")
