"""``app.lock`` across real processes, on Redis and PostgreSQL.

* Many processes take one lock in turn, shared or exclusive, and log each hold to a file:
  an exclusive hold never overlaps another, and each exclusive token is above every earlier one.
* A holder SIGKILLed mid-hold: the process waiting for the lock gets it once the dead holder's
  lease lapses, with a higher fencing token, and not before. The holder is a real process
  (``python -c``) that takes ``app.lock`` and never leaves its block; the waiter is an
  ``app.lock`` in the test process, queued behind it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from taskflow import QueueTasks
from tests.cli_support import drop_shared, shared_url

pytestmark = pytest.mark.slow

LEASE_S = 2.0

HOLDER = textwrap.dedent(
    f"""
    import asyncio, os, sys

    from taskflow import QueueTasks

    async def main() -> None:
        app = QueueTasks(name="locks", broker=os.environ["TF_URL"])
        async with app, app.lock("dwh.swap", ttl={LEASE_S}) as lock:
            print("held", lock.token, flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


@pytest.fixture(params=["redis", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    value = shared_url(request.param)
    try:
        yield value
    finally:
        drop_shared(value)


async def _read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return await anyio.to_thread.run_sync(proc.stdout.readline)


@pytest.mark.timeout(60)
async def test_the_waiter_gets_the_lock_after_the_killed_holders_lease(url: str) -> None:
    env = {**os.environ, "TF_URL": url}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        with anyio.fail_after(30):
            line = await _read_line(holder)
        assert line.startswith("held "), line
        dead_token = int(line.split()[1])
        app = QueueTasks(name="locks", broker=url)
        async with app:
            got = asyncio.Event()
            tokens: list[int] = []

            async def wait_for_it() -> None:
                async with app.lock("dwh.swap") as lock:
                    tokens.append(lock.token)
                    got.set()

            waiter = asyncio.get_running_loop().create_task(wait_for_it())
            # The live holder renews: the waiter stays queued through several of its leases.
            await asyncio.sleep(LEASE_S * 2)
            assert not got.is_set()
            [state] = await app.coordination.lock_states(["dwh.swap"], now=time.time())
            assert [h.token for h in state.holders] == [dead_token] and len(state.waiters) == 1

            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
            killed_at = time.monotonic()
            with anyio.fail_after(LEASE_S + 5):
                await got.wait()
            took = time.monotonic() - killed_at
            await waiter
        # Within the lease (plus the waiter's backoff, at most 1 s), and with a newer token.
        assert took <= LEASE_S + 1.5, took
        assert tokens[0] > dead_token
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


TURNS = textwrap.dedent(
    """
    import asyncio, os, sys

    from taskflow import QueueTasks

    async def main(n: int, log: str, turns: int) -> None:
        app = QueueTasks(name="locks", broker=os.environ["TF_URL"])
        async with app:
            for turn in range(turns):
                shared = (n + turn) % 3 != 0
                async with app.lock("hot", shared=shared) as lock:
                    mode = "S" if shared else "X"
                    with open(log, "a") as f:
                        f.write(f"+ {mode} {lock.token} {n}\\n")
                    await asyncio.sleep(0.005)
                    with open(log, "a") as f:
                        f.write(f"- {mode} {lock.token} {n}\\n")

    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
    """
)


@pytest.mark.timeout(120)
def test_processes_taking_turns_never_overlap_a_writer(url: str, tmp_path: Path) -> None:
    log = tmp_path / "holds.log"
    env = {**os.environ, "TF_URL": url}
    procs = [
        subprocess.Popen([sys.executable, "-c", TURNS, str(n), str(log), "8"], env=env)
        for n in range(4)
    ]
    try:
        assert [proc.wait(timeout=90) for proc in procs] == [0] * 4
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    inside: dict[str, set[int]] = {"S": set(), "X": set()}
    newest = 0
    lines = log.read_text().splitlines()
    assert len(lines) == 2 * 4 * 8
    for line in lines:
        sign, mode, token_text, _ = line.split()
        token = int(token_text)
        if sign == "-":
            inside[mode].remove(token)
            continue
        if mode == "X":
            assert not inside["S"] and not inside["X"], line
            assert token > newest, line
        else:
            assert not inside["X"], line
        inside[mode].add(token)
        newest = max(newest, token)
