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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from tests.faults._harness import LEASE_S, FaultRun
from tests.services import free_port, redis_url, start_redis_server, stop_process

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.redis, pytest.mark.timeout(180)]


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


async def test_a_worker_cut_off_from_redis_past_its_lease_loses_nothing_and_rejoins(
    link: Link, tmp_path: Path
) -> None:
    redis_url()  # skip (or fail) with the usual reason when Redis is not set up
    port = free_port()
    server = start_redis_server(
        port, args=("--bind", f"127.0.0.1 {link.host_ip}", "--protected-mode", "no")
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        async with FaultRun(
            tmp_path, url, fault="partition (worker)", backend="redis", workers=1
        ) as run:
            cut_off = run.start_worker(wrap=link.wrap, url=f"redis://{link.host_ip}:{port}/0")
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
            with anyio.fail_after(60):
                while not any(r.pid == cut_off.pid and r.at > back for r in run.runs()):
                    await anyio.sleep(0.05)  # a real process: its log is polled
            row = await run.finish()
            assert row.problems() == [], row
    finally:
        stop_process(server)
