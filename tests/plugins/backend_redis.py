"""Backend plugin for the conformance suite: Redis, single node (``redis``) and a Redis Cluster
(``redis_cluster``).

Follows the protocol in ``tests/conformance/conftest.py``. ``backend_factory_redis`` opens a
broker on the test server (``tests.services.redis_url()``) under a random key prefix and deletes
that prefix's keys afterwards. ``backend_factory_redis_cluster`` does the same on a 3-master
Redis Cluster that the session-scoped ``redis_cluster_url`` fixture starts on free loopback
ports (``redis-server --cluster-enabled yes`` + ``redis-cli --cluster create``), waits for
``cluster_state:ok`` on every node, and stops by pid at the end of the session.
``backend_url_redis`` / ``backend_url_redis_cluster`` are URLs with a random ``?prefix=``; every
key under it (all apps' keys) is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager as AsyncContextManager

import pytest

from taskflow.abc import Broker
from taskflow.redis import RedisBroker, from_url
from tests.services import (
    free_port,
    redis_ping,
    redis_url,
    start_redis_server,
    stop_process,
    wait_until,
)

BACKEND_KINDS: tuple[str, ...] = ("redis", "redis_cluster")

BrokerFactory = Callable[[], AsyncContextManager[Broker]]

_CLUSTER_MASTERS = 3
_CLUSTER_READY_TIMEOUT_S = 30.0


def random_prefix() -> str:
    """A key prefix no other test uses."""
    return f"tftest-{os.urandom(6).hex()}"


async def delete_prefix(broker: RedisBroker) -> None:
    """Delete every key under the broker's prefix (on each node of a cluster)."""
    storage = broker.storage
    client = storage.client
    pattern = f"{storage.prefix}*"
    if storage.cluster:
        for node in client.get_primaries():
            keys = [k async for k in client.scan_iter(match=pattern, count=1000, target_nodes=node)]
            for key in keys:
                await client.delete(key)
    else:
        keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
        if keys:
            await client.delete(*keys)


def twin(broker: RedisBroker) -> RedisBroker:
    """A new broker on `broker`'s server and namespace (prefix and app), as another process
    of the same app would build it: it shares no cache with `broker`."""
    storage = broker.storage
    prefix = storage.prefix.removesuffix(f":{storage.app}:")
    return from_url(storage.url, prefix=prefix, app=storage.app, cluster=storage.cluster)


def redis_factory(url: str) -> BrokerFactory:
    """A factory of fresh brokers on `url`, each under its own prefix, cleaned up on exit."""

    @contextlib.asynccontextmanager
    async def open_backend() -> AsyncIterator[Broker]:
        broker = from_url(url, prefix=random_prefix())
        async with broker:
            try:
                yield broker
            finally:
                with contextlib.suppress(Exception):
                    await delete_prefix(broker)

    return open_backend


async def delete_keys(url: str, pattern: str) -> None:
    """Delete every key matching `pattern` on the server of `url` (each node of a cluster)."""
    async with from_url(url) as broker:
        client = broker.storage.client
        nodes = client.get_primaries() if broker.storage.cluster else [None]
        for node in nodes:
            options = {} if node is None else {"target_nodes": node}
            keys = [k async for k in client.scan_iter(match=pattern, count=1000, **options)]
            for key in keys:
                await client.delete(key)


@contextlib.asynccontextmanager
async def namespaced_url(url: str) -> AsyncIterator[str]:
    """`url` with a random key prefix; every key under it is deleted afterwards."""
    prefix = random_prefix()
    try:
        yield f"{url}?prefix={prefix}"
    finally:
        await delete_keys(url, f"{prefix}:*")


@pytest.fixture
async def backend_url_redis() -> AsyncIterator[str]:
    """A URL of the test server under a key prefix of the test's own."""
    async with namespaced_url(redis_url()) as url:
        yield url


@pytest.fixture
async def backend_url_redis_cluster(redis_cluster_url: str) -> AsyncIterator[str]:
    """A URL of the session's test cluster under a key prefix of the test's own."""
    async with namespaced_url(redis_cluster_url) as url:
        yield url


@pytest.fixture
def private_port() -> Iterator[int]:
    """The port of a redis-server of the test's own, free to flush, kill or pause clients on
    (stopped by its pid afterwards)."""
    redis_url()  # skip (or fail) with the usual reason if Redis is not installed/running
    port = free_port()
    proc: subprocess.Popen[bytes] = start_redis_server(port)
    try:
        yield port
    finally:
        stop_process(proc)


@pytest.fixture
def backend_factory_redis() -> BrokerFactory:
    """Fresh, open Redis brokers on the test server (random key prefix, deleted afterwards)."""
    return redis_factory(redis_url())


@pytest.fixture
def backend_factory_redis_cluster(redis_cluster_url: str) -> BrokerFactory:
    """Fresh, open Redis brokers on the session's 3-master test cluster."""
    return redis_factory(redis_cluster_url)


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """Start a 3-master Redis Cluster on free loopback ports; yield ``redis+cluster://...``."""
    with redis_cluster(replicas=0) as ports:
        yield f"redis+cluster://127.0.0.1:{ports[0]}"


@contextlib.contextmanager
def redis_cluster(*, replicas: int) -> Iterator[list[int]]:
    """A Redis Cluster of 3 masters with `replicas` replicas each on free loopback ports, ready
    (``cluster_state:ok`` on every node); yields the ports and stops every node by its pid."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        redis_url()  # skips (or fails under TASKFLOW_REQUIRE_SERVICES=1) with the fix
        pytest.skip("redis-server and redis-cli are needed for the Redis Cluster tests")
    workdir = tempfile.mkdtemp(prefix="taskflow-cluster-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = [free_port() for _ in range(_CLUSTER_MASTERS * (1 + replicas))]
        procs = [_start_cluster_node(binary, port, workdir) for port in ports]
        subprocess.run(
            [
                *(cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)),
                *("--cluster-replicas", str(replicas), "--cluster-yes"),
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=_CLUSTER_READY_TIMEOUT_S,
        )
        _wait_cluster_ok(cli, ports)
        yield ports
    finally:
        for proc in procs:
            stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _start_cluster_node(binary: str, port: int, workdir: str) -> subprocess.Popen[bytes]:
    node_dir = os.path.join(workdir, str(port))
    os.makedirs(node_dir)
    proc = subprocess.Popen(
        [
            binary,
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", node_dir),
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            # The bus port defaults to port + 10000, which may be taken or past 65535.
            *("--cluster-port", str(free_port())),
            *("--save", "", "--appendonly", "no", "--logfile", os.path.join(node_dir, "log")),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"cluster node on port {port} exited; see {node_dir}/log")
        return redis_ping("127.0.0.1", port, timeout=0.2)

    try:
        wait_until(
            ready,
            deadline_s=_CLUSTER_READY_TIMEOUT_S,
            failure=f"cluster node on port {port} did not start; see {node_dir}/log",
        )
    except RuntimeError:
        stop_process(proc)
        raise
    return proc


def _wait_cluster_ok(cli: str, ports: list[int]) -> None:
    for port in ports:

        def ok(port: int = port) -> bool:
            info = subprocess.run(
                [cli, "-p", str(port), "cluster", "info"],
                capture_output=True,
                text=True,
                check=False,
                stdin=subprocess.DEVNULL,
            ).stdout
            return "cluster_state:ok" in info

        wait_until(
            ok,
            deadline_s=_CLUSTER_READY_TIMEOUT_S,
            every_s=0.1,
            failure=f"Redis Cluster node {port} not ok in time",
        )


__all__ = [
    "BACKEND_KINDS",
    "backend_factory_redis",
    "backend_factory_redis_cluster",
    "backend_url_redis",
    "backend_url_redis_cluster",
    "delete_prefix",
    "random_prefix",
    "redis_cluster",
    "redis_cluster_url",
    "redis_factory",
    "twin",
]
