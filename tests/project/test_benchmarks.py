"""The benchmark runner: a ``--quick`` run of taskflow's memory adapter and the floor, end to end,
plus the runner's pure helpers (medians, ratios, percentiles, progress bar, system selection).

The end-to-end run uses only systems that live in the project's interpreter: no peer venv is
created here (that needs the network and a minute).
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

import pytest
from benchmarks import registry, runner

REPO_ROOT = Path(__file__).resolve().parents[2]
OURS_AND_FLOOR = "taskflow-memory,floor-asyncio"


def load_harness() -> ModuleType:
    """The adapters' `_harness` module (a script directory, not a package)."""
    path = REPO_ROOT / "benchmarks" / "adapters" / "_harness.py"
    spec = importlib.util.spec_from_file_location("bench_harness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(180)  # longer than the default: its process's deadline is 120 s
@pytest.mark.slow
def test_quick_run_measures_every_workload_and_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--n",
            "500",
            "--d-n",
            "100",
            "--duration",
            "0.3",
            "--systems",
            OURS_AND_FLOOR,
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    for system in ("taskflow-memory", "floor-asyncio"):
        measured = document["medians"][system]
        assert set(measured) == set(runner.WORKLOADS)
        for workload in ("A1", "A2", "B", "E2E"):
            assert measured[workload]["tasks_per_s"] > 0
        assert 0 < measured["C"]["p50_ms"] <= measured["C"]["p99_ms"]
        assert measured["D"]["seconds"] > 0
        assert document["systems"][system]["versions"]["python"]
        low, high = document["spread"][system]["E2E"]["tasks_per_s"]
        assert low <= measured["E2E"]["tasks_per_s"] <= high
    assert len(document["runs"]) == 2 * len(runner.WORKLOADS)
    assert "| workload | unit | taskflow-memory | floor-asyncio |" in done.stdout
    assert "| E2E enqueue 500 + await all, c=100 | tasks/s |" in done.stdout
    assert "12/12 done" in done.stderr  # the progress bar reached its end


def test_medians_take_the_middle_repetition_and_keep_na_reasons() -> None:
    runs = [
        {"system": "s", "workload": "E2E", "rep": rep, "metrics": {"tasks_per_s": value}}
        for rep, value in enumerate((30.0, 10.0, 20.0), start=1)
    ]
    runs.append({"system": "s", "workload": "A2", "rep": 1, "metrics": {"n/a": "no batch"}})
    runs.append({"system": "s", "workload": "B", "rep": 1, "error": "exit 1: boom"})
    table = runner.medians(runs)
    assert table["s"]["E2E"] == {"tasks_per_s": 20.0}
    assert table["s"]["A2"] == {"n/a": "no batch"}
    assert table["s"]["B"] == {"error": "exit 1: boom"}
    assert runner.spread(runs) == {"s": {"E2E": {"tasks_per_s": [10.0, 30.0]}}}


def test_comparisons_say_better_than_one_when_ours_wins_in_either_direction() -> None:
    settings = runner.parse_settings(["--quick", "--out", "unused.json"])
    rows = [r for r in runner.table_rows(settings) if r.workload in ("E2E", "D")]
    table = {
        "taskflow-memory": {"E2E": {"tasks_per_s": 50.0}, "D": {"seconds": 0.2}},
        "taskiq-memory": {"E2E": {"tasks_per_s": 20.0}, "D": {"seconds": 0.4}},
        "floor-asyncio": {"E2E": {"tasks_per_s": 200.0}, "D": {"seconds": 0.1}},
    }
    compared = runner.comparisons(settings, table, rows)["taskflow-memory"]
    e2e, sleepers = (compared[row.label] for row in rows)
    assert e2e == {"vs_best_peer": 2.5, "of_floor": 0.25}
    assert sleepers == {"vs_best_peer": 2.0, "of_floor": 0.5}


def test_selection_by_backend_keeps_its_floor_and_names_are_checked() -> None:
    memory = [s.name for s in registry.select("memory")]
    assert memory == ["taskflow-memory", "taskiq-memory", "floor-asyncio"]
    assert all(s.backend == "redis" for s in registry.select("redis"))
    assert len(registry.select("all")) == len(registry.SYSTEMS)
    picked = registry.select("redis", ["floor-asyncio", "taskflow-memory"])
    assert [s.name for s in picked] == ["taskflow-memory", "floor-asyncio"]  # registry order
    with pytest.raises(KeyError, match="known systems: taskflow-memory"):
        registry.select("memory", ["celery"])


def test_peers_pin_their_requirements_and_ours_run_in_this_interpreter() -> None:
    for system in registry.SYSTEMS:
        assert system.adapter_path.exists(), system.adapter_path
        assert all("==" in line for line in system.requirements), system
        assert system.own_venv == (system.role == "peer")


def test_progress_bar_draws_done_over_total_and_the_step() -> None:
    stream = io.StringIO()
    bar = runner.ProgressBar(4, stream, width=8)
    bar.step()
    bar.show("taskiq-memory B rep 2")
    assert stream.getvalue() == "[##......] 1/4 taskiq-memory B rep 2\n"


def test_percentile_is_nearest_rank() -> None:
    harness = load_harness()
    values = [float(v) for v in range(1, 101)]
    assert harness.percentile(values, 0.50) == 50.0
    assert harness.percentile(values, 0.99) == 99.0
    assert harness.percentile([3.0], 0.99) == 3.0
    assert harness.chunks(2500, 1000) == [1000, 1000, 500]


async def test_gather_bounded_runs_every_wait_at_most_limit_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_harness()
    monkeypatch.setitem(sys.modules, "_harness", sys.modules["bench_harness"])
    path = REPO_ROOT / "benchmarks" / "adapters" / "_servers.py"
    spec = importlib.util.spec_from_file_location("bench_servers", path)
    assert spec is not None and spec.loader is not None
    servers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(servers)
    running = 0
    most = 0
    done: list[int] = []

    def wait_for(i: int) -> Callable[[], Awaitable[None]]:
        async def wait() -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0)
            running -= 1
            done.append(i)

        return wait

    await servers.gather_bounded([wait_for(i) for i in range(500)], 7)
    assert sorted(done) == list(range(500))
    assert most == 7


def test_before_after_table_says_whether_each_metric_held_within_ten_percent() -> None:
    from benchmarks import before_after

    settings = before_after.parse(["--baseline", "x", "--backend", "memory", "--workloads", "B,C"])[
        1
    ]

    def run(tree: str, metrics: dict[str, float]) -> dict[str, object]:
        return {
            "system": "taskflow-memory",
            "workload": "B" if "tasks_per_s" in metrics else "C",
            "tree": tree,
            "metrics": metrics,
        }

    runs = [
        run("before", {"tasks_per_s": 100.0}),
        run("after", {"tasks_per_s": 95.0}),
        run("before", {"p50_ms": 1.0, "p99_ms": 2.0}),
        run("after", {"p50_ms": 1.2, "p99_ms": 1.0}),
    ]
    rows = before_after.table(runs, settings).splitlines()[2:]
    assert rows == [
        "| memory | B tasks_per_s | 100.000 | 95.000 | 0.95 | yes |",
        "| memory | C p50_ms | 1.000 | 1.200 | 1.20 | NO |",
        "| memory | C p99_ms | 2.000 | 1.000 | 0.50 | yes |",
    ]


def test_before_after_refuses_a_baseline_that_is_not_a_checkout(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.before_after",
            "--baseline",
            str(tmp_path),
            "--backend",
            "memory",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert f"not {tmp_path}/src" in done.stderr
