"""``taskflow flow``: a flow's state, its tasks and the roll-up, as text and JSON, on Redis and
PostgreSQL; an unknown flow is one line and exit status 4; a failed one exits 5. Following a
flow live (``--watch``) across a crash is in tests/backends/test_flow_kill.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflow import QueueTasks
from taskflow.cli import ExitCode
from tests.cli_support import (
    drop_shared,
    env_for,
    kill_group,
    read_rest,
    run_cli,
    shared_url,
    start_cli,
    wait_for_line,
    write_app,
)

pytestmark = pytest.mark.slow

APP = """
import os

from taskflow import QueueTasks

app = QueueTasks(name="cli-test", broker=os.environ["TF_URL"])


@app.task(name="first")
async def first(fail: bool) -> int:
    if fail:
        raise KeyError("day")
    return 1


@app.task(name="second")
async def second(value: int) -> int:
    return value + 1
"""


@pytest.fixture(params=["redis", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    value = shared_url(request.param)
    try:
        yield value
    finally:
        drop_shared(value)


def _submit(url: str, fail: bool) -> str:
    async def submit() -> str:
        app = QueueTasks(name="cli-test", broker=url)

        @app.task(name="first")
        def first(fail: bool) -> int:  # pragma: no cover - run by the workers
            raise AssertionError

        @app.task(name="second")
        def second(value: int) -> int:  # pragma: no cover - run by the workers
            raise AssertionError

        flow = app.flow("cli")
        a = flow.add(first, fail)
        flow.add(second, after=[a], inputs={"value": a})
        async with app:
            return (await flow.submit()).flow_id

    return asyncio.run(submit())


def test_a_flow_shown_before_during_and_after_its_run(tmp_path: Path, url: str) -> None:
    target = write_app(tmp_path, "flowapp", APP)
    env = env_for(tmp_path, TF_URL=url)
    flow_id = _submit(url, fail=False)

    waiting = run_cli(tmp_path, "flow", target, flow_id, env=env)
    assert waiting.returncode == ExitCode.OK, waiting.stderr
    lines = waiting.stdout.splitlines()
    assert lines[0] == f"flow {flow_id}: running, 0 of 2 done"
    assert lines[1].split()[:2] == ["first", "queued"]
    assert lines[2].split()[:2] == ["second", "waiting"]

    worker = start_cli(tmp_path, "worker", target, env=env)
    try:
        wait_for_line(worker, " ready: ")
        watch = start_cli(tmp_path, "flow", target, flow_id, "--watch", "--json", env=env)
        seen: list[str] = []
        assert read_rest(watch, seen) == ExitCode.OK, "\n".join(seen)
    finally:
        kill_group(worker)
    final = json.loads(seen[-1])
    assert (final["state"], final["summary"]) == ("succeeded", "2 of 2 done")
    assert [n["node"] for n in final["nodes"]] == ["first", "second"]
    assert final["counts"]["done"] == 2


def test_a_failed_flow_exits_5_and_an_unknown_one_4(tmp_path: Path, url: str) -> None:
    target = write_app(tmp_path, "flowapp", APP)
    env = env_for(tmp_path, TF_URL=url)
    flow_id = _submit(url, fail=True)
    worker = start_cli(tmp_path, "worker", target, env=env)
    try:
        wait_for_line(worker, " ready: ")
        watched = run_cli(tmp_path, "flow", target, flow_id, "--watch", env=env)
    finally:
        kill_group(worker)
    assert watched.returncode == ExitCode.TASK_FAILED, watched.stderr
    assert f"flow {flow_id}: failed, 0 of 2 done, 2 failed: KeyError: 'day'; Upstream" in (
        watched.stdout
    )

    unknown = run_cli(tmp_path, "flow", target, "no-such-flow", env=env)
    assert unknown.returncode == ExitCode.NOT_FOUND
    assert unknown.stderr.startswith("taskflow: no task of flow 'no-such-flow' is stored")
    assert len(unknown.stderr.strip().splitlines()) == 1
