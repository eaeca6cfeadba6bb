"""A Redis Cluster failover mid-run: each master's replica is promoted in turn.

A cluster of 3 masters with one replica each (ports of its own); the workload of `_harness` runs
on it, and once a quarter of the work has run every replica takes over from its master with
``CLUSTER FAILOVER`` (the coordinated kind: the master stops taking writes until its replica has
them all, so nothing acknowledged is lost), one after the other. Every invariant must hold.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import redis

from tests.faults._harness import FaultRun, run_with_fault
from tests.plugins.backend_redis import redis_cluster
from tests.services import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.redis, pytest.mark.timeout(180)]


def _replicas(ports: list[int]) -> list[int]:
    """The ports of the nodes that are replicas now."""
    found = []
    for port in ports:
        with redis.Redis(port=port) as node:
            if node.info("replication")["role"] == "slave":
                found.append(port)
    return found


def _wait_linked(ports: list[int]) -> None:
    """Wait until every replica's link to its master is up (synced): a failover needs it."""
    for port in _replicas(ports):
        with redis.Redis(port=port) as node:
            wait_until(
                lambda: node.info("replication").get("master_link_status") == "up",
                deadline_s=30,
                failure=f"replica {port} not linked to its master in time",
            )


def _promote(port: int, tries: int = 5) -> None:
    """CLUSTER FAILOVER on the replica at `port` until it is a master. A manual failover that
    does not complete in time (Redis gives it 5 s) is simply not done, so it is asked again."""
    with redis.Redis(port=port) as node:
        for _ in range(tries):
            node.execute_command("CLUSTER FAILOVER")
            try:
                wait_until(
                    lambda: node.info("replication")["role"] == "master",
                    deadline_s=6,
                    failure="not yet",
                )
                return
            except RuntimeError:
                continue
    raise RuntimeError(f"replica {port} did not become master after {tries} failovers")


async def test_every_master_fails_over_to_its_replica_mid_run(tmp_path: Path) -> None:
    with redis_cluster(replicas=1) as ports:
        url = f"redis+cluster://127.0.0.1:{ports[0]}"
        _wait_linked(ports)

        async def failovers(run: FaultRun) -> None:
            for port in _replicas(ports):
                await anyio.to_thread.run_sync(_promote, port)

        async with FaultRun(
            tmp_path, url, fault="cluster failover x3", backend="redis cluster"
        ) as run:
            await run_with_fault(run, failovers)
