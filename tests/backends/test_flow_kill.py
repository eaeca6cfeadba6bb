"""A fan-out across a crash, with real worker processes on Redis and PostgreSQL.

A flow ``split -> publish`` is submitted; ``split`` fans out 8 shards and a join. The first
worker is SIGKILLed after the fan-out was stored and before its run reported (so the task is
still running there), while two of the shards hang on it. A second worker takes everything
over once the leases lapse: it re-runs ``split`` (which fans out again: the same derived ids,
so nothing new is stored), runs the lapsed shards again and the others once, and the join runs
once, when the last shard ends. ``split`` ends with the join's result and ``publish`` gets it.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflow import FlowState, FlowStatus, QueueTasks, TaskStatus
from tests.cli_support import (
    drop_shared,
    env_for,
    kill_group,
    read_rest,
    shared_url,
    start_cli,
    wait_for_line,
    write_app,
)

pytestmark = pytest.mark.slow

SHARDS = 8

APP = """
import asyncio
import os

from taskflow import GlobalConfig, QueueTasks, TaskContext

app = QueueTasks(
    name="cli-test",
    broker=os.environ["TF_URL"],
    config=GlobalConfig(lease_s=2.0, heartbeat_s=0.5, shutdown_grace_s=1.0),
)


def log(line: str) -> None:
    fd = os.open(os.environ["RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


@app.task(name="shard", retries=2)  # a run that dies spends an attempt
async def shard(part: int) -> int:
    log(f"shard {part}")
    if os.environ.get("HANG"):
        print("SHARD STARTED", part, flush=True)
        await asyncio.sleep(3600)
    return part * part


@app.task(name="join_all")
async def join_all(results: list[int]) -> int:
    log("join")
    return sum(results)


@app.task(name="split", retries=3)
async def split(ctx: TaskContext, n: int) -> int:
    log(f"split {ctx.attempt}")
    joined = await ctx.fan_out(shard, range(n), join=join_all)
    if os.environ.get("HANG"):
        print("FANNED OUT", flush=True)
        await asyncio.sleep(3600)
    return joined


@app.task(name="publish")
async def publish(total: int) -> str:
    log("publish")
    return f"total {total}"
"""


@pytest.fixture(params=["redis", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    value = shared_url(request.param)
    try:
        yield value
    finally:
        drop_shared(value)


def _producer(url: str) -> QueueTasks:
    app = QueueTasks(name="cli-test", broker=url)

    @app.task(name="split", retries=3)
    def split(n: int) -> int:  # pragma: no cover - sent from here, run by the workers
        raise AssertionError("run by the workers")

    @app.task(name="publish")
    def publish(total: int) -> str:  # pragma: no cover - sent from here, run by the workers
        raise AssertionError("run by the workers")

    return app


def _submit(url: str) -> tuple[str, dict[str, str]]:
    async def submit() -> tuple[str, dict[str, str]]:
        app = _producer(url)
        flow = app.flow("crash")
        fan = flow.add("split", SHARDS)
        flow.add("publish", after=[fan], inputs={"total": fan})
        async with app:
            handle = await flow.submit()
        return handle.flow_id, dict(handle.tasks)

    return asyncio.run(submit())


def _final(url: str, flow_id: str) -> tuple[FlowStatus, str]:
    async def read() -> tuple[FlowStatus, str]:
        app = _producer(url)
        async with app:
            flow = await app.get_flow(flow_id)
            status = await flow.wait(timeout=30)
            published = (await flow.result())["publish"]
        return status, published

    return asyncio.run(read())


def _worker(tmp_path: Path, target: str, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = start_cli(tmp_path, "worker", target, "--concurrency", "3", env=env)
    wait_for_line(proc, " ready: ")
    return proc


def test_sigkill_during_a_fan_out_loses_no_shard_and_runs_the_join_once(
    tmp_path: Path, url: str
) -> None:
    target = write_app(tmp_path, "fanapp", APP)
    runs = tmp_path / "runs.log"
    env = env_for(tmp_path, TF_URL=url, RUNS=str(runs))
    first = _worker(tmp_path, target, {**env, "HANG": "1"})
    try:
        flow_id, tasks = _submit(url)
        seen = wait_for_line(first, "FANNED OUT")
        wait_for_line(first, "SHARD STARTED")
        wait_for_line(first, "SHARD STARTED")
        kill_group(first)  # split's run and two shards die with it, unreported
        watch = start_cli(tmp_path, "flow", target, flow_id, "--watch", env=env)
        second = _worker(tmp_path, target, env)
        try:
            lines: list[str] = []
            assert read_rest(watch, lines) == 0, "\n".join(lines)
            assert f"flow {flow_id}: succeeded, {2 + SHARDS + 1} of {2 + SHARDS + 1} done" in lines
        finally:
            kill_group(second)
    finally:
        kill_group(first)
    assert seen is not None

    status, published = _final(url, flow_id)
    expected = sum(i * i for i in range(SHARDS))
    assert published == f"total {expected}"
    assert status.state is FlowState.SUCCEEDED
    # The flow: its two nodes, the 8 shards and one join, each stored once and done.
    assert status.total == 2 + SHARDS + 1
    assert all(node.status is TaskStatus.DONE for node in status.nodes)
    assert sorted(n.node for n in status.nodes) == sorted(
        ["split", "publish", "split.join", *(f"split.shard[{i}]" for i in range(SHARDS))]
    )
    assert status.node("split").task_id == tasks["split"]
    assert status.node("split").attempts == 2
    assert status.node("split.join").attempts == 1

    counts = Counter(runs.read_text().split("\n"))
    assert counts["split 1"] == counts["split 2"] == 1
    assert counts["join"] == 1  # the join ran once
    assert counts["publish"] == 1
    shard_runs = [counts[f"shard {i}"] for i in range(SHARDS)]
    assert all(n >= 1 for n in shard_runs)  # no shard lost
    assert sum(shard_runs) == SHARDS + 2  # the two killed mid-run ran again, the rest once
