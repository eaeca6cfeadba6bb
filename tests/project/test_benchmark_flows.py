"""The flow benchmark (``python -m benchmarks.flows``): its figures, its private Redis server,
and a small run of taskflow's six systems on memory, Redis and PostgreSQL.

Celery's side is not run here (its venv needs the network and a minute); its adapter shares the
node log and the figures checked below. The run uses schemas ending in ``_test``, so a
benchmark running beside the tests keeps its own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from benchmarks import flows

from tests.services import postgres_dsn

REPO_ROOT = Path(__file__).resolve().parents[2]
ADAPTERS_DIR = REPO_ROOT / "benchmarks" / "adapters"


def load_flowbench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/adapters/_flowbench.py`` (a script directory, not a package)."""
    monkeypatch.syspath_prepend(str(ADAPTERS_DIR))
    import _flowbench

    return _flowbench


def write_log(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_each_edge_runs_from_the_parents_end_to_the_childs_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bench = load_flowbench(monkeypatch)
    # Two stages of two shards: stage 0 ends at 1.003 (last shard), its join runs 1.010-1.011,
    # stage 1's shards start 2 and 4 ms after the join's end, its join 5 ms after its last shard.
    log = write_log(
        tmp_path / "nodes.log",
        [
            "s 0 0 1.000 1.001",
            "s 0 1 1.000 1.003",
            "j 0 0 1.010 1.011",
            "s 1 1 1.015 1.016",
            "s 1 0 1.013 1.014",
            "j 1 0 1.021 1.022",
            "s 1 0 1.100 1.101",  # a node run twice: counted, its first run kept
        ],
    )
    metrics = bench.figures(bench.Shape(2, 2), log, (0.9, 0.05, 1.1))
    assert metrics["nodes"] == 6
    assert metrics["nodes_per_s"] == pytest.approx(30.0)
    assert metrics["fan_in_p50_ms"] == pytest.approx(5.0)  # 7 ms and 5 ms: nearest rank
    assert metrics["fan_in_p99_ms"] == pytest.approx(7.0)
    assert metrics["fan_out_p50_ms"] == pytest.approx(2.0)
    assert metrics["fan_out_p99_ms"] == pytest.approx(4.0)
    assert metrics["edge_p99_ms"] == pytest.approx(7.0)
    assert metrics["repeated_nodes"] == 1


def test_a_fanning_stage_is_the_parent_of_its_shards_and_follows_the_previous_join(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bench = load_flowbench(monkeypatch)
    log = write_log(
        tmp_path / "nodes.log",
        [
            "f 0 0 1.000 1.001",
            "s 0 0 1.004 1.005",
            "j 0 0 1.008 1.009",
            "f 1 0 1.012 1.013",
            "s 1 0 1.014 1.015",
            "j 1 0 1.016 1.017",
        ],
    )
    metrics = bench.figures(bench.Shape(2, 1), log, (1.0, 0.001, 1.02), fanned=True)
    assert metrics["nodes"] == 6
    assert metrics["fan_out_p99_ms"] == pytest.approx(3.0)  # 3 ms and 1 ms
    assert metrics["chain_p50_ms"] == pytest.approx(3.0)


def test_a_node_that_never_ran_makes_the_run_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bench = load_flowbench(monkeypatch)
    log = write_log(tmp_path / "nodes.log", ["s 0 0 1.000 1.001", "j 0 0 1.002 1.003"])
    with pytest.raises(RuntimeError, match="1 of 3 nodes never ran"):
        bench.figures(bench.Shape(1, 2), log, (1.0, 0.001, 1.01))


def test_every_system_drains_the_same_node_count_but_celerys_whole_chain() -> None:
    settings = flows.parse_settings(["--stages", "100", "--width", "99", "--chain-stages", "10"])
    shapes = {s.name: flows.shape_of(s, settings) for s in settings.systems}
    assert shapes["taskflow-redis"] == (100, 99)
    assert shapes["taskflow-redis-fan-out"] == (100, 98)  # plus a fanning node per stage
    assert shapes["celery-redis"] == (100, 99)
    assert shapes["celery-redis-chain"] == (10, 99)
    assert {s.system.name for s in settings.systems if s.role == "peer"} == {"celery-redis"}


def test_ratios_say_how_many_times_better_than_celery() -> None:
    table = {
        "celery-redis": {"nodes_per_s": 300.0, "edge_p50_ms": 200.0, "edge_p99_ms": 600.0},
        "taskflow-redis": {"nodes_per_s": 6000.0, "edge_p50_ms": 5.0, "edge_p99_ms": 12.0},
    }
    assert flows.ratios(table) == {
        "taskflow-redis": {"nodes_per_s": 20.0, "edge_p50_ms": 40.0, "edge_p99_ms": 50.0}
    }


def _answers(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_a_private_redis_server_answers_inside_the_block_and_is_gone_after(
    tmp_path: Path,
) -> None:
    with flows.private_redis(str(tmp_path)) as url:
        assert _answers(url)
    assert not _answers(url)


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_taskflows_six_systems_drain_a_small_flow(tmp_path: Path) -> None:
    out = tmp_path / "flows.json"
    systems = [s.name for s in flows.FLOW_SYSTEMS if s.role == "ours"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.flows",
            "--systems",
            ",".join(systems),
            "--reps",
            "1",
            "--stages",
            "3",
            "--width",
            "5",
            "--postgres-url",
            postgres_dsn(),
            "--timeout",
            "120",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        env={**os.environ, "TASKFLOW_BENCH_SCHEMA_SUFFIX": "_test"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(out.read_text())
    for name in systems:
        measured = document["medians"][name]
        assert measured["nodes"] == 18, name  # 3 x (5 + 1); the fan-out variant 3 x (4 + 2)
        assert measured["repeated_nodes"] == 0, name
        assert measured["nodes_per_s"] > 0, name
        assert 0 <= measured["fan_in_p50_ms"] <= measured["fan_in_p99_ms"], name
    assert "| taskflow-postgres-fan-out | postgres | fan-out | 18 |" in document["table"]
