"""A worker SIGKILLed in the middle of ``ctx.artifacts.put`` leaves nothing listed or fetchable,
and the housekeeping of another worker drops its record and the store's leftovers later.

A child process runs a worker on Redis or PostgreSQL (with the backend's own store) and a task
whose put reads from a generator that prints a line after a few megabytes and then hangs; the
test kills the child on that line. From its own app on the same server it then checks that the
task lists no artifact and that a fetch says the artifact is still being written, and runs
housekeeping passes at a fake time: six hours after the put began, the pass marks it abandoned
and sweeps the partial write, and the next one forgets the record.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from taskflow import ArtifactNotFound, GlobalConfig, QueueTasks
from taskflow._artifact_records import STALE_WRITE_S
from taskflow._artifact_sweep import ArtifactSweep
from taskflow.testing import FakeClock

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from taskflow import QueueTasks, TaskContext

    app = QueueTasks(name="killput", broker=sys.argv[1])

    async def pieces():
        for _ in range(5):
            yield os.urandom(700_000)
        print("written", flush=True)
        await asyncio.Event().wait()

    @app.task
    async def export(ctx: TaskContext) -> None:
        print(ctx.task_id, flush=True)
        await ctx.artifacts.put("export.csv", pieces())

    async def main():
        async with app.running(concurrency=1):
            await export.add_task()
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


@pytest.fixture(params=["redis", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    value: str = request.getfixturevalue(f"backend_url_{request.param}")
    return value


async def kill_mid_put(url: str, tmp_path: Path) -> str:
    """Run the child until its put has written a few megabytes, SIGKILL it; the task's id."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), url, stdout=subprocess.PIPE, env={**os.environ}
    )
    try:
        assert proc.stdout is not None
        task_id = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line == b"written\n", f"the child ended early (exit code {proc.returncode})"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return task_id


@pytest.mark.timeout(90)
async def test_a_put_killed_midway_is_never_listed_and_is_swept_later(
    url: str, tmp_path: Path
) -> None:
    task_id = await kill_mid_put(url, tmp_path)
    clock = FakeClock(start=time.time())
    app = QueueTasks(name="killput", broker=url, clock=clock, config=GlobalConfig())
    sweep = ArtifactSweep(app.artifact_keeper, 60)
    async with app:
        handle = app.result(task_id)
        assert await handle.artifacts() == []
        with pytest.raises(ArtifactNotFound, match="still being written"):
            await anext(handle.fetch_artifact("export.csv"))
        early = await sweep.run_once()
        assert (early.abandoned, early.partial_removed) == (0, 0), "a put may still be going on"

        await clock.advance(STALE_WRITE_S + 120)
        late = await sweep.run_once()
        assert (late.abandoned, late.partial_removed) == (1, 1)
        assert await handle.artifacts() == []
        with pytest.raises(ArtifactNotFound, match="put did not finish"):
            await anext(handle.fetch_artifact("export.csv"))
        await clock.advance(60)
        assert (await sweep.run_once()).forgotten == 1
        assert await app.artifact_keeper.get(task_id, "export.csv") is None
