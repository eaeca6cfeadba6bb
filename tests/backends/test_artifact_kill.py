"""A process SIGKILLed in the middle of an artifact write leaves nothing visible, and
`sweep_partial` removes what it left.

A child process opens the store (a backend's own, from its URL, or a directory), starts a write
whose pieces come from a generator that prints a line after a few megabytes and then hangs; the
test kills it with SIGKILL on that line, then checks from a fresh store on the same server that
the artifact cannot be read, that a sweep with a cutoff before the write's start leaves the
leftovers alone, and that one after it removes them (once).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from taskflow import ArtifactNotFound, DirectoryArtifactStore
from taskflow._backends import broker_from_url
from taskflow.abc import ArtifactStore

pytestmark = pytest.mark.slow

#: The write's start, as the child gives it (`now`).
STARTED = 1_000.0

CHILD = textwrap.dedent(
    f"""
    import asyncio, os, sys
    from taskflow import DirectoryArtifactStore
    from taskflow._backends import broker_from_url

    async def pieces():
        for _ in range(5):
            yield os.urandom(700_000)
        print("written", flush=True)
        await asyncio.Event().wait()

    async def main(where):
        if where.startswith("dir:"):
            store = DirectoryArtifactStore(where[4:])
            await store.open()
        else:
            broker = broker_from_url(where)
            await broker.open()
            store = broker.default_artifact_store()
            await store.open()
        await store.write("t1", "export.csv", pieces(), now={STARTED})

    asyncio.run(main(sys.argv[1]))
    """
)


async def open_store(stack: AsyncExitStack, where: str) -> ArtifactStore:
    if where.startswith("dir:"):
        return await stack.enter_async_context(DirectoryArtifactStore(where[4:]))
    broker = await stack.enter_async_context(broker_from_url(where))
    store = broker.default_artifact_store()
    assert store is not None
    return await stack.enter_async_context(store)


@pytest.fixture(params=["directory", "redis", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the store is: ``dir:<path>``, or a backend URL in a namespace of the test's own."""
    if request.param == "directory":
        return f"dir:{tmp_path}"
    url: str = request.getfixturevalue(f"backend_url_{request.param}")
    return url


async def kill_mid_write(where: str, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), where, stdout=subprocess.PIPE, env={**os.environ}
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line == b"written\n", f"the child ended early (exit code {proc.returncode})"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.timeout(90)
async def test_a_write_killed_midway_leaves_nothing_and_is_swept(
    where: str, tmp_path: Path
) -> None:
    await kill_mid_write(where, tmp_path)
    async with AsyncExitStack() as stack:
        store = await open_store(stack, where)
        with pytest.raises(ArtifactNotFound):
            await anext(store.read("t1", "export.csv"))
        assert await store.sweep_partial(older_than=STARTED) == 0  # started at the cutoff
        assert await store.sweep_partial(older_than=STARTED + 1) == 1
        assert await store.sweep_partial(older_than=STARTED + 1) == 0
        with pytest.raises(ArtifactNotFound):
            await anext(store.read("t1", "export.csv"))
