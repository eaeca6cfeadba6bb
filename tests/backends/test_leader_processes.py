"""``app.leadership`` across real processes, on Redis and PostgreSQL.

* Three candidate processes campaign for one role; the leader is SIGKILLed: another takes the
  role within the lease (plus the campaign's retry), with a higher fencing token.
* The leader is SIGSTOPped past its lease; a candidate in the test process takes the role and
  writes a fenced record; the leader is SIGCONTed: it learns it lost the role
  (`LeadershipLost`, its block cancelled) and its fenced write with the old token is refused.
* A private Redis server is SIGSTOPped under a leader: its renewals hang, and the role counts
  as lost once the lease runs out without an answer.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import anyio
import pytest

from taskflow import LeadershipLost, QueueTasks
from tests.cli_support import drop_shared, shared_url
from tests.services import free_port, start_redis_server, stop_process

pytestmark = pytest.mark.slow

LEASE_S = 1.5

CANDIDATE = textwrap.dedent(
    f"""
    import asyncio, os

    from taskflow import LeadershipLost, QueueTasks

    async def main() -> None:
        app = QueueTasks(name="leaders", broker=os.environ["TF_URL"])
        async with app:
            term = app.leadership("gen", ttl={LEASE_S})
            try:
                async with term:
                    ok = await term.fenced_set("leaders", "state", b"%d" % os.getpid())
                    print("leads", term.token, ok, flush=True)
                    await asyncio.Event().wait()
            except LeadershipLost as lost:
                print("lost", lost.token, flush=True)
                ok = await term.fenced_set("leaders", "state", b"stale")
                print("fenced-write", "accepted" if ok else "refused", flush=True)

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


class Candidates:
    """Candidate processes, and the lines they print as (process index, words, when)."""

    def __init__(self, url: str, count: int) -> None:
        env = {**os.environ, "TF_URL": url}
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", CANDIDATE], env=env, stdout=subprocess.PIPE, text=True
            )
            for _ in range(count)
        ]
        self.lines: queue.Queue[tuple[int, list[str], float]] = queue.Queue()
        for n, proc in enumerate(self.procs):
            threading.Thread(target=self._read, args=(n, proc), daemon=True).start()

    def _read(self, n: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.put((n, line.split(), time.monotonic()))

    async def next_line(self, timeout: float) -> tuple[int, list[str], float]:
        return await anyio.to_thread.run_sync(lambda: self.lines.get(timeout=timeout))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.mark.timeout(90)
async def test_after_the_leader_is_killed_another_leads_within_the_lease(url: str) -> None:
    candidates = Candidates(url, 3)
    try:
        leader, words, _ = await candidates.next_line(timeout=30)
        assert words[0] == "leads", words
        dead_token = int(words[1])
        await anyio.sleep(LEASE_S)  # the others campaign through a full lease: nobody else leads
        assert candidates.lines.empty()
        candidates.procs[leader].send_signal(signal.SIGKILL)
        candidates.procs[leader].wait(timeout=10)
        killed_at = time.monotonic()
        successor, words, led_at = await candidates.next_line(timeout=LEASE_S + 10)
        assert words[0] == "leads" and successor != leader, words
        assert int(words[1]) > dead_token
        # Within the lease plus the campaign's last retry (a tenth of the lease) and slack.
        assert led_at - killed_at <= LEASE_S + 0.5, led_at - killed_at
        with pytest.raises(queue.Empty):  # and only one successor
            await candidates.next_line(timeout=LEASE_S)
    finally:
        candidates.stop()


@pytest.mark.timeout(90)
async def test_a_leader_paused_past_its_lease_learns_it_lost_and_its_writes_are_refused(
    url: str,
) -> None:
    candidates = Candidates(url, 1)
    paused = candidates.procs[0]
    try:
        _, words, _ = await candidates.next_line(timeout=30)
        assert words == ["leads", words[1], "True"], words
        old_token = int(words[1])
        paused.send_signal(signal.SIGSTOP)
        app = QueueTasks(name="leaders", broker=url)
        async with app:
            with anyio.fail_after(LEASE_S + 10):
                async with app.leadership("gen", ttl=30) as term:
                    assert term.token > old_token
                    assert await term.fenced_set("leaders", "state", b"successor")
                    paused.send_signal(signal.SIGCONT)
                    _, lost, _ = await candidates.next_line(timeout=LEASE_S + 10)
                    assert lost == ["lost", str(old_token)]
                    _, write, _ = await candidates.next_line(timeout=10)
                    assert write == ["fenced-write", "refused"]
                    stored = await app.fenced_get("leaders", "state")
                    assert stored is not None
                    assert (stored.token, stored.value) == (term.token, b"successor")
                    info = await app.leader_of("gen")
                    assert info is not None and info.owner == term.owner
        assert paused.wait(timeout=10) == 0
    finally:
        candidates.stop()


@pytest.mark.timeout(60)
async def test_a_store_that_stops_answering_past_the_lease_loses_the_role() -> None:
    """A private redis-server SIGSTOPped under a leader: its renewals hang, none answers before
    the lease runs out, and the role counts as lost (the block cancelled, LeadershipLost)."""
    port = free_port()
    server = start_redis_server(port)
    try:
        app = QueueTasks(name="leaders", broker=f"redis://127.0.0.1:{port}/0")
        async with app:
            lost: list[LeadershipLost] = []
            held, gone = anyio.Event(), anyio.Event()

            async def lead() -> None:
                try:
                    async with app.leadership("gen", ttl=LEASE_S):
                        held.set()
                        await anyio.sleep_forever()
                except LeadershipLost as exc:
                    lost.append(exc)
                    gone.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(lead)
                await held.wait()
                server.send_signal(signal.SIGSTOP)
                stopped_at = time.monotonic()
                try:
                    with anyio.fail_after(LEASE_S + 5):
                        await gone.wait()
                finally:
                    server.send_signal(signal.SIGCONT)
            took = time.monotonic() - stopped_at
            assert "could not be renewed before its lease ran out" in lost[0].reason
            assert took <= LEASE_S + 1, took
    finally:
        stop_process(server)
