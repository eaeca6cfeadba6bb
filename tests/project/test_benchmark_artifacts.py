"""``benchmarks/artifacts_rss.py`` at a small size, so it keeps working: one fresh process per
store, every figure present. The figures themselves are measured at 200 MB and written in
``docs/benchmarks.md``, not asserted here (a loaded machine would make them flaky)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.artifacts_rss import reset_peak, status_kib

from tests.services import postgres_dsn, redis_url

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_peak_reading_sees_an_allocation() -> None:
    base = reset_peak()
    block = bytearray(50_000_000)
    block[::4096] = b"1" * len(block[::4096])  # touch every page
    assert status_kib("VmHWM") - base >= 45_000
    del block


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_benchmark_runs_on_every_store(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks.artifacts_rss", "--mb", "3", "--json"),
            *("--redis-url", redis_url(), "--postgres-url", postgres_dsn(), "--dir", str(tmp_path)),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["store"] for r in results] == ["directory", "redis", "postgres"]
    for result in results:
        assert result["mb"] == 3.0
        assert result["put_mb_per_s"] > 0 and result["fetch_mb_per_s"] > 0
        assert result["put_peak_rss_increase_mb"] >= 0
    assert list(tmp_path.iterdir()) == []  # the directory store's files are gone
