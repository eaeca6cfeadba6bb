"""Periodic slots across real worker processes, on Redis and PostgreSQL.

Three ``taskflow worker`` processes run an app with a 100 ms schedule for a few seconds; one of
them is SIGKILLed halfway. Each run of the task appends its slot, attempt and pid to a shared
log (one ``O_APPEND`` write). Every slot of the run's window ran (none lost across the kill),
and no slot became two tasks: a slot's runs are one task's attempts (a second attempt only for
a task the killed worker held).
"""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_support import (
    drop_shared,
    env_for,
    kill_group,
    shared_url,
    start_cli,
    wait_for_line,
    write_app,
)

pytestmark = pytest.mark.slow

EVERY_S = 0.1

APP = f"""
import os
import time

from taskflow import GlobalConfig, QueueTasks, TaskContext

app = QueueTasks(
    name="beats",
    broker=os.environ["TF_URL"],
    config=GlobalConfig(lease_s=1.0, heartbeat_s=0.25, shutdown_grace_s=1.0),
)


@app.periodic(every={EVERY_S})
@app.task(name="generate")
async def generate(ctx: TaskContext) -> None:
    slot = ctx.headers["periodic-slot"]
    line = f"{{slot}} {{ctx.attempt}} {{os.getpid()}} {{time.time():.6f}}\\n"
    fd = os.open(os.environ["TF_RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
"""


@pytest.fixture(params=["redis", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    value = shared_url(request.param)
    try:
        yield value
    finally:
        drop_shared(value)


def read_runs(log: Path) -> dict[float, list[tuple[int, int]]]:
    """Slot -> [(attempt, pid)] in log order."""
    runs: dict[float, list[tuple[int, int]]] = defaultdict(list)
    for line in log.read_text().splitlines():
        slot, attempt, pid, _ = line.split()
        runs[float(slot)].append((int(attempt), int(pid)))
    return runs


@pytest.mark.timeout(90)
def test_each_slot_runs_once_across_three_workers_and_a_sigkill(tmp_path: Path, url: str) -> None:
    target = write_app(tmp_path, "beats", APP)
    log = tmp_path / "runs.log"
    env = env_for(tmp_path, TF_URL=url, TF_RUNS=str(log))
    workers = [start_cli(tmp_path, "worker", target, env=env, new_session=True) for _ in range(3)]
    try:
        for worker in workers:
            wait_for_line(worker, "ready")
        started = time.time()
        time.sleep(2.0)  # the workload: 20 slots at 100 ms, in real time
        victim = workers[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.time()
        time.sleep(3.0)  # the two survivors go on, and re-run what the victim held
        stopped = time.time()
    finally:
        for worker in workers:
            kill_group(worker)
    runs = read_runs(log)
    window = [
        round(k * EVERY_S, 6)
        for k in range(int((started + 0.5) / EVERY_S), int((stopped - 1.5) / EVERY_S))
    ]
    assert len(window) >= 25
    missing = [slot for slot in window if slot not in runs]
    assert not missing, f"slots lost: {missing}"
    for slot in window:
        attempts = [attempt for attempt, _ in runs[slot]]
        # One task per slot: its attempts count up from 1, each once.
        assert attempts == list(range(1, len(attempts) + 1)), (slot, runs[slot])
        if len(attempts) > 1:
            assert runs[slot][0][1] == victim.pid, (slot, runs[slot])
    # The window spans the kill: slots due after it ran on the survivors.
    assert sum(slot > killed_at + 0.5 for slot in window) >= 5
