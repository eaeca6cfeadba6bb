"""The Redis and PostgreSQL benchmark adapters: taskflow's and the floors, in ``--quick`` mode.

Each backend's test runs ``python -m benchmarks --quick`` for taskflow's adapter and that
backend's floor (their workers are separate processes, as in a full run) against the servers of
``scripts/services``, and checks every workload produced numbers. No peer venv is made here: the
peers need the network and minutes. The 1,000,000-row PostgreSQL variant runs with a small seed
(``TASKFLOW_BENCH_FINISHED_ROWS``). The tests use Redis database 14 and schemas ending in
``_test``, so a benchmark running beside them (database 15, its own schemas) is left alone.
The URL helpers of ``benchmarks/adapters/_servers.py`` are checked without servers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from benchmarks import runner

from tests.services import postgres_dsn, redis_url

REPO_ROOT = Path(__file__).resolve().parents[2]
ADAPTERS_DIR = REPO_ROOT / "benchmarks" / "adapters"


def load_servers(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/adapters/_servers.py`` (a script directory, not a package)."""
    monkeypatch.syspath_prepend(str(ADAPTERS_DIR))
    import _servers

    return _servers


def quick_run(tmp_path: Path, systems: str, extra_env: dict[str, str]) -> dict[str, object]:
    """Run ``python -m benchmarks --quick`` for `systems`; return the JSON it saved."""
    out = tmp_path / "quick.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--n",
            "300",
            "--d-n",
            "100",
            "--duration",
            "0.3",
            "--systems",
            systems,
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **extra_env},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document: dict[str, object] = json.loads(out.read_text())
    return document


def assert_every_workload_measured(measured: dict[str, dict[str, float]]) -> None:
    """Throughputs positive, p50 <= p99, D took time."""
    assert set(measured) == set(runner.WORKLOADS)
    for workload in ("A1", "A2", "B", "E2E"):
        assert measured[workload]["tasks_per_s"] > 0, workload
    assert 0 < measured["C"]["p50_ms"] <= measured["C"]["p99_ms"]
    assert measured["D"]["seconds"] > 0


@pytest.mark.timeout(360)  # longer than the default: its process's deadline is 300 s
@pytest.mark.slow
def test_redis_adapters_of_taskflow_and_the_floor_measure_every_workload(tmp_path: Path) -> None:
    url = redis_url()
    document = quick_run(
        tmp_path,
        "taskflow-redis,floor-redis",
        {"TASKFLOW_BENCH_REDIS_URL": url, "TASKFLOW_BENCH_REDIS_DB": "14"},
    )
    medians = document["medians"]
    assert isinstance(medians, dict)
    for system in ("taskflow-redis", "floor-redis"):
        assert_every_workload_measured(medians[system])
    assert "### redis backend" in str(document["table"])


@pytest.mark.timeout(360)  # longer than the default: its process's deadline is 300 s
@pytest.mark.slow
def test_postgres_adapters_of_taskflow_the_big_table_and_the_floor(tmp_path: Path) -> None:
    dsn = postgres_dsn()
    document = quick_run(
        tmp_path,
        "taskflow-postgres,taskflow-postgres-1m,floor-postgres",
        {
            "TASKFLOW_BENCH_POSTGRES_DSN": dsn,
            "TASKFLOW_BENCH_FINISHED_ROWS": "2000",
            "TASKFLOW_BENCH_SCHEMA_SUFFIX": "_test",
        },
    )
    medians = document["medians"]
    assert isinstance(medians, dict)
    for system in ("taskflow-postgres", "floor-postgres"):
        assert_every_workload_measured(medians[system])
    big = medians["taskflow-postgres-1m"]
    assert big["B"]["tasks_per_s"] > 0
    assert big["B"]["finished_rows"] == 2000
    assert "n/a" in big["A1"]  # only B is measured on the big table


def test_redis_urls_point_at_the_dedicated_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKFLOW_BENCH_REDIS_DB", raising=False)
    monkeypatch.delitem(sys.modules, "_servers", raising=False)
    servers = load_servers(monkeypatch)
    assert servers.dedicated_redis_url("redis://h:6379/0") == "redis://h:6379/15"
    assert servers.dedicated_redis_url("redis://:pw@h:6379") == "redis://:pw@h:6379/15"
    with pytest.raises(servers.NotApplicable, match="no Redis URL"):
        servers.dedicated_redis_url(None)


def test_search_path_is_added_to_a_dsn_keeping_its_query(monkeypatch: pytest.MonkeyPatch) -> None:
    servers = load_servers(monkeypatch)
    assert (
        servers.with_search_path("postgresql://u@h/db", "s")
        == "postgresql://u@h/db?options=-csearch_path%3Ds"
    )
    assert servers.with_search_path("postgresql://u@h/db?sslmode=disable", "s").endswith(
        "?sslmode=disable&options=-csearch_path%3Ds"
    )
    with pytest.raises(servers.NotApplicable, match="no PostgreSQL URL"):
        servers.postgres_url("")
