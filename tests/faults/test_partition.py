"""A network partition between one worker "host" and the server, made with a network namespace.

The test creates a namespace and a veth pair of its own (``ip netns add``, ``ip link add ...
type veth``; root only), starts a private redis-server listening on loopback (the producer and
a second worker) and on the host end of the pair, and runs one worker inside the namespace.
Once a quarter of the work has run, the host end goes down for twice the lease, then up again.
The cut-off worker's tasks must be re-delivered after their lease, its late writes refused
(one terminal outcome each), no body started after its outcome, and the worker must rejoin:
it runs tasks again after the link is back. Everything it made is removed at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from taskflow import QueueTasks
from tests.faults._harness import LEASE_S, FaultRun
from tests.services import (
    free_port,
    poll_until,
    private_postgres,
    redis_url,
    start_redis_server,
    stop_process,
)

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(180)]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass(frozen=True)
class Link:
    """A namespace and the veth pair into it: ``host_ip`` on the host end, ``ns_ip`` inside."""

    namespace: str
    host_end: str
    host_ip: str

    @property
    def wrap(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def down(self) -> None:
        _ip("link", "set", self.host_end, "down")

    def up(self) -> None:
        _ip("link", "set", self.host_end, "up")


@pytest.fixture
def link() -> Iterator[Link]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a network partition needs root and iproute2's `ip`")
    tag = secrets.token_hex(3)
    octet = int(tag[:2], 16) % 250 + 1
    namespace, host_end, ns_end = f"tf{tag}", f"tfh{tag}", f"tfn{tag}"
    host_ip, ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _ip("link", "set", ns_end, "netns", namespace)
        _ip("addr", "add", f"{host_ip}/24", "dev", host_end)
        _ip("link", "set", host_end, "up")
        _ip("netns", "exec", namespace, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_end)
        _ip("netns", "exec", namespace, "ip", "link", "set", ns_end, "up")
        _ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        yield Link(namespace, host_end, host_ip)
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)


async def _cut_off_worker(
    tmp_path: Path, link: Link, *, url: str, cut_off_url: str, backend: str
) -> None:
    """One worker on the host and one in the namespace; the namespace's link goes down for
    twice the lease mid-run, then up: every invariant holds, and the cut-off worker rejoins."""
    async with FaultRun(
        tmp_path, url, fault="partition (worker)", backend=backend, workers=1
    ) as run:
        cut_off = run.start_worker(wrap=link.wrap, url=cut_off_url)
        run.workers.append(cut_off)
        async with anyio.create_task_group() as tg:
            tg.start_soon(run.produce, 25, 0.1)  # 4 s of work: it outlasts the partition
            await run.until_busy(cut_off.pid)
            link.down()
            await anyio.sleep(2 * LEASE_S)  # the fault itself: cut off past the lease
            link.up()
            back = time.time()
            await run.recovered(after=back)
        # It rejoins: with fresh work after the link is back, it runs bodies again.
        await run.send(200)
        await poll_until(lambda: run.ran_since(back, cut_off.pid), deadline_s=60)
        row = await run.finish()
        assert row.problems() == [], row


@pytest.mark.redis
async def test_a_worker_cut_off_from_redis_past_its_lease_loses_nothing_and_rejoins(
    link: Link, tmp_path: Path
) -> None:
    redis_url()  # skip (or fail) with the usual reason when Redis is not set up
    port = free_port()
    server = start_redis_server(
        port, args=("--bind", f"127.0.0.1 {link.host_ip}", "--protected-mode", "no")
    )
    try:
        await _cut_off_worker(
            tmp_path,
            link,
            url=f"redis://127.0.0.1:{port}/0",
            cut_off_url=f"redis://{link.host_ip}:{port}/0",
            backend="redis",
        )
    finally:
        stop_process(server)


@pytest.mark.postgres
async def test_a_worker_cut_off_from_postgres_past_its_lease_loses_nothing_and_rejoins(
    link: Link, tmp_path: Path
) -> None:
    with private_postgres(also_on=link.host_ip) as server:
        await _cut_off_worker(
            tmp_path,
            link,
            url=server.dsn,
            cut_off_url=server.dsn_on(link.host_ip),
            backend="postgres",
        )


PRODUCER = textwrap.dedent(
    """
    import asyncio
    import sys

    from taskflow import QueueTasks

    app = QueueTasks(name="faults", broker=sys.argv[1])


    @app.task
    def work(i: int) -> int:
        return i


    async def main() -> None:
        async with app:
            for batch in range(int(sys.argv[2])):
                calls = [
                    work.options(task_id=f"b{batch}x{i}").prepare(i) for i in range(BATCH)
                ]
                try:
                    await app.add_tasks(calls)
                    print(f"sent {batch}", flush=True)
                except Exception as exc:
                    print(f"failed {batch} {type(exc).__name__}", flush=True)
                await asyncio.sleep(0.05)


    BATCH = 200
    asyncio.run(main())
    """
)


@pytest.mark.redis
async def test_a_producer_cut_off_in_the_middle_of_batch_sends_creates_no_half_batch(
    link: Link, tmp_path: Path
) -> None:
    """The producer runs in the namespace and sends batches of 200 (one round trip each) while
    its link goes down for 3 s and comes back: every batch it was told was sent is there whole,
    and every other batch is there whole or not at all."""
    redis_url()  # skip (or fail) with the usual reason when Redis is not set up
    port = free_port()
    server = start_redis_server(
        port, args=("--bind", f"127.0.0.1 {link.host_ip}", "--protected-mode", "no")
    )
    batches = 40
    (tmp_path / "producer.py").write_text(PRODUCER)
    try:
        producer = subprocess.Popen(
            [
                *link.wrap,
                sys.executable,
                "producer.py",
                f"redis://{link.host_ip}:{port}/0",
                str(batches),
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert producer.stdout is not None
        first = producer.stdout.readline()  # the first batch is in: cut the link mid-run
        assert first.startswith("sent"), first
        link.down()
        await anyio.sleep(3.0)  # the fault itself: the producer is cut off for 3 s
        link.up()
        rest, _ = await anyio.to_thread.run_sync(lambda: producer.communicate(timeout=120))
        lines = [first.strip(), *rest.splitlines()]
        sent = {int(line.split()[1]) for line in lines if line.startswith("sent")}
        assert len(lines) == batches, lines
        app = QueueTasks(name="faults", broker=f"redis://127.0.0.1:{port}/0")
        async with app:
            for batch in range(batches):
                ids = [f"b{batch}x{i}" for i in range(200)]
                records = await app.storage.get_many(ids, now=time.time())
                present = sum(r is not None for r in records)
                assert present in (0, 200), f"batch {batch}: {present} of 200 tasks exist"
                if batch in sent:
                    assert present == 200, f"batch {batch} was reported sent but is not there"
        print(f"\nproducer partition: {len(sent)} of {batches} batches sent, none half-created")
    finally:
        stop_process(server)
