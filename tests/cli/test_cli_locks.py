"""``taskflow locks`` against Redis and PostgreSQL: the locks another process holds and waits
for, as a table and as JSON, and its errors (one line, a distinct exit status)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflow import QueueTasks
from taskflow.abc import LockMode, LockRequest
from taskflow.cli import ExitCode
from tests.cli_support import drop_shared, env_for, run_cli, shared_url, write_app

pytestmark = pytest.mark.slow

APP = """
import os

from taskflow import QueueTasks

app = QueueTasks(name="cli-test", broker=os.environ["TF_URL"])
"""


@pytest.fixture(params=["redis", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    value = shared_url(request.param)
    try:
        yield value
    finally:
        drop_shared(value)


def take(url: str, requests: list[LockRequest]) -> list[int | None]:
    """Request locks on `url`'s backend, as another process would, at the real time."""

    async def run() -> list[int | None]:
        async with QueueTasks(name="cli-test", broker=url) as app:
            return await app.coordination.acquire_locks(requests, ttl_s=600, now=time.time())

    return asyncio.run(run())


def test_locks_lists_holders_then_waiters_in_queue_order(tmp_path: Path, url: str) -> None:
    target = write_app(tmp_path, "shop", APP)
    env = env_for(tmp_path, TF_URL=url)
    tokens = take(
        url,
        [
            LockRequest("dwh.sales", "export-1", LockMode.SHARED),
            LockRequest("dwh.sales", "export-2", LockMode.SHARED),
            LockRequest("dwh.sales", "swap", LockMode.EXCLUSIVE),
            LockRequest("dwh.sales", "export-3", LockMode.SHARED),
            LockRequest("audit", "auditor", LockMode.EXCLUSIVE),
        ],
    )
    assert tokens[2] is None and tokens[3] is None

    done = run_cli(tmp_path, "locks", target, env=env)
    assert done.returncode == ExitCode.OK, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["LOCK", "ROLE", "MODE", "TOKEN", "OWNER", "TIME"]
    rows = [line.split() for line in lines[1:-1]]
    assert [(r[0], r[1]) for r in rows] == [
        ("audit", "holder"),
        ("dwh.sales", "holder"),
        ("dwh.sales", "holder"),
        ("dwh.sales", "waiter"),
        ("dwh.sales", "waiter"),
    ]
    assert rows[3][2:6] == ["#1", "exclusive", "-", "swap"]
    assert rows[4][2:6] == ["#2", "shared", "-", "export-3"]
    assert "expires in" in lines[1] and "waiting" in lines[4]
    assert lines[-1] == "2 lock(s), 3 holder(s), 2 waiter(s)"

    done = run_cli(tmp_path, "locks", target, "dwh.sales", "--json", env=env)
    assert done.returncode == ExitCode.OK, done.stderr
    [doc] = [json.loads(line) for line in done.stdout.splitlines()]
    assert doc["name"] == "dwh.sales"
    assert sorted(h["owner"] for h in doc["holders"]) == ["export-1", "export-2"]
    assert {h["mode"] for h in doc["holders"]} == {"shared"}
    assert all(590 < h["expires_in_s"] <= 600 for h in doc["holders"])
    assert [(w["position"], w["owner"], w["mode"]) for w in doc["waiters"]] == [
        (1, "swap", "exclusive"),
        (2, "export-3", "shared"),
    ]


def test_locks_with_nothing_held(tmp_path: Path, url: str) -> None:
    target = write_app(tmp_path, "shop", APP)
    done = run_cli(tmp_path, "locks", target, env=env_for(tmp_path, TF_URL=url))
    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stdout.strip() == "no lock is held or waited for"


def test_a_bad_lock_name_is_one_line_and_a_usage_error(tmp_path: Path) -> None:
    target = write_app(tmp_path, "shop", APP)
    env = env_for(tmp_path, TF_URL="redis://127.0.0.1:1/0")
    done = run_cli(tmp_path, "locks", target, "x" * 300, env=env)
    assert done.returncode == ExitCode.USAGE, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("taskflow: lock name") and "the limit is 200" in line


def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    target = write_app(tmp_path, "shop", APP)
    env = env_for(tmp_path, TF_URL="redis://127.0.0.1:1/0")
    done = run_cli(tmp_path, "locks", target, env=env)
    assert done.returncode == ExitCode.UNAVAILABLE, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
