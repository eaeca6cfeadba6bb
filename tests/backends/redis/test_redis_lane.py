"""The pipelined connection ("lane") script calls take on a single Redis node.

Real servers only: the shared test server for calls and error replies (keys under a random
prefix), a private ``redis-server`` for anything that flushes scripts or kills connections.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskflow.abc import TaskStatus
from taskflow.redis import from_url
from taskflow.redis._client import make_client
from taskflow.redis._lane import Lane, LaneClosed, pack_command
from taskflow.redis._scripts import Script
from taskflow.testing import FakeClock
from tests.conformance._helpers import claim, done, enqueue_one
from tests.plugins.backend_redis import random_prefix
from tests.services import free_port, redis_ping, redis_url, stop_process

pytestmark = pytest.mark.redis


async def _open_lane(url: str) -> tuple[Any, Lane]:
    """A client made as the backend makes it, and a lane on its pool."""
    client = make_client(url, False, {})
    lane = Lane.for_pool(client.connection_pool)
    assert lane is not None
    await lane.connect()
    return client, lane


@pytest.fixture
async def lane() -> AsyncIterator[Lane]:
    client, lane = await _open_lane(redis_url())
    try:
        yield lane
    finally:
        await lane.aclose()
        await client.aclose(close_connection_pool=True)


def test_pack_command_is_resp() -> None:
    assert pack_command(("EVALSHA", b"ab", 2, "é")) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n2\r\n$2\r\n\xc3\xa9\r\n"
    )


async def test_concurrent_calls_share_one_connection_and_are_answered_in_order(
    private_port: int,
) -> None:
    client, lane = await _open_lane(f"redis://127.0.0.1:{private_port}/0")
    try:
        before = int((await client.info("stats"))["total_connections_received"])
        results: list[Any] = [None] * 2000
        key = f"{random_prefix()}:n"

        async def incr(i: int) -> None:
            results[i] = await lane.execute("INCR", key)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for i in range(len(results)):
                    tg.start_soon(incr, i)
        # Written in call order, answered in FIFO order: the i-th call saw the i-th increment.
        assert results == list(range(1, len(results) + 1))
        after = int((await client.info("stats"))["total_connections_received"])
        assert after == before  # no new connection: the lane's one was opened before
    finally:
        await lane.aclose()
        await client.aclose(close_connection_pool=True)


async def test_an_error_reply_fails_only_its_own_call(lane: Lane) -> None:
    key = f"{random_prefix()}:s"
    await lane.execute("SET", key, "not a number")
    outcomes: dict[str, Any] = {}

    async def call(name: str, *args: Any) -> None:
        try:
            outcomes[name] = await lane.execute(*args)
        except ResponseError as exc:
            outcomes[name] = exc

    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "before", "GET", key)
                tg.start_soon(call, "bad", "INCR", key)
                tg.start_soon(call, "after", "ECHO", "still here")
        assert outcomes["before"] == b"not a number"
        assert type(outcomes["bad"]) is ResponseError
        assert "not an integer" in str(outcomes["bad"])
        assert outcomes["after"] == b"still here"
        assert await lane.execute("PING") == b"PONG"
    finally:
        await lane.execute("DEL", key)


async def test_noscript_after_script_flush_is_reloaded_transparently(private_port: int) -> None:
    client, lane = await _open_lane(f"redis://127.0.0.1:{private_port}/0")
    script = Script("echo", "return ARGV[1]")
    try:
        with anyio.fail_after(10):
            assert await lane.script_load(script.source) == script.sha.encode()
            assert await script.run(lane, ["k"], ["one"]) == b"one"
            await client.script_flush()
            with pytest.raises(NoScriptError):
                await lane.evalsha(script.sha, 1, "k", "raw")
            # Script.run loads it again and repeats the call.
            assert await script.run(lane, ["k"], ["two"]) == b"two"
            assert await lane.evalsha(script.sha, 1, "k", "three") == b"three"
    finally:
        await lane.aclose()
        await client.aclose(close_connection_pool=True)


@pytest.mark.timeout(120)  # longer than the default: its own deadline is 60 s
async def test_calls_succeed_through_client_kill_mid_run(private_port: int) -> None:
    """Connections killed while thousands of calls are in flight: each call fails over to a
    new connection and still gets its own answer."""
    client, lane = await _open_lane(f"redis://127.0.0.1:{private_port}/0")
    results: dict[int, Any] = {}
    killed: list[int] = []

    async def echo(i: int) -> None:
        results[i] = await lane.execute("ECHO", str(i))

    async def kill() -> None:
        async with aioredis.Redis(port=private_port) as admin:
            for _ in range(3):
                await anyio.sleep(0)  # let calls be written before each kill
                killed.append(await admin.client_kill_filter(_type="normal", skipme=True))

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(3000):
                    tg.start_soon(echo, i)
                tg.start_soon(kill)
        assert sum(killed) >= 1
        assert results == {i: str(i).encode() for i in range(3000)}
        assert await lane.execute("PING") == b"PONG"
    finally:
        await lane.aclose()
        await client.aclose(close_connection_pool=True)


@pytest.mark.parametrize("protocol", [2, 3])
async def test_the_lane_speaks_the_clients_resp_version_and_database(
    private_port: int, protocol: int
) -> None:
    client = make_client(f"redis://127.0.0.1:{private_port}/5", False, {"protocol": protocol})
    lane = Lane.for_pool(client.connection_pool)
    assert lane is not None
    try:
        with anyio.fail_after(10):
            await lane.execute("SET", "where", "db5")
            assert await client.get("where") == b"db5"  # the same database as the client
            script = Script("pair", "return {ARGV[1], tonumber(ARGV[2]), false}")
            assert await script.run(lane, ["k"], ["a", 7]) == [b"a", 7, None]
            info = await lane.execute("CLIENT", "INFO")
            assert f"resp={protocol}".encode() in info
    finally:
        await lane.aclose()
        await client.aclose(close_connection_pool=True)


async def test_socket_timeout_bounds_a_call_and_the_lane_carries_on(private_port: int) -> None:
    """With ``socket_timeout`` a call whose reply is that late fails with redis-py's
    TimeoutError (after the client's retries, on a new connection each time); the lane
    then serves the next call."""
    client = make_client(
        f"redis://127.0.0.1:{private_port}/0",
        False,
        {"socket_timeout": 0.3, "retry": Retry(NoBackoff(), 1)},
    )
    lane = Lane.for_pool(client.connection_pool)
    assert lane is not None
    try:
        with anyio.fail_after(10):
            with pytest.raises(RedisTimeoutError):
                await lane.execute("BLPOP", f"{random_prefix()}:never", "0")
            assert await lane.execute("PING") == b"PONG"
    finally:
        await lane.aclose()
        await client.aclose(close_connection_pool=True)


async def test_close_with_calls_in_flight_fails_them_cleanly(lane: Lane) -> None:
    key = f"{random_prefix()}:never"
    errors: list[BaseException] = []

    async def call(*args: Any) -> None:
        try:
            await lane.execute(*args)
        except LaneClosed as exc:
            errors.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            # BLPOP with no timeout holds the connection: the calls behind it wait too.
            tg.start_soon(call, "BLPOP", key, "0")
            for _ in range(5):
                tg.start_soon(call, "PING")
            await anyio.wait_all_tasks_blocked()
            await lane.aclose()
    assert len(errors) == 6
    assert all("closed" in str(e) for e in errors)
    with pytest.raises(LaneClosed):
        await lane.execute("PING")


async def test_single_node_storage_runs_scripts_on_a_lane_cluster_does_not(
    redis_cluster_url: str,
) -> None:
    async with from_url(redis_url(), prefix=random_prefix()) as b:
        assert b.storage.pipelined
    assert b.storage.pipelined is False
    async with from_url(redis_cluster_url, prefix=random_prefix()) as b:
        assert b.storage.pipelined is False


def test_a_unix_socket_pool_gets_no_lane() -> None:
    """Options the lane cannot honour keep the client's own connections."""
    pool = aioredis.BlockingConnectionPool.from_url("unix:///tmp/taskflow-no-such.sock")
    assert Lane.for_pool(pool) is None
    decoding = aioredis.BlockingConnectionPool.from_url(
        "redis://127.0.0.1:6379/0", decode_responses=True
    )
    assert Lane.for_pool(decoding) is None


@pytest.fixture
def tls_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server speaking TLS, with a password-protected user; its rediss:// URL
    (database 3). Skipped where openssl or a TLS-enabled redis-server is missing."""
    redis_url()  # skip (or fail) with the usual reason if Redis is not installed/running
    openssl, binary = shutil.which("openssl"), shutil.which("redis-server")
    if openssl is None or binary is None:
        pytest.skip("the TLS test needs openssl and redis-server")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    plain, tls = free_port(), free_port()
    proc = subprocess.Popen(
        [
            binary,
            *("--port", str(plain), "--tls-port", str(tls), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
            *("--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"),
            *("--user", "lane", "on", ">pw", "~*", "&*", "+@all"),
            *("--save", "", "--appendonly", "no"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not redis_ping("127.0.0.1", plain, timeout=0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip("redis-server did not start with TLS (built without it?)")
            time.sleep(0.05)  # polling a child process's readiness: there is no event
        yield f"rediss://lane:pw@127.0.0.1:{tls}/3?ssl_ca_certs={cert}"
    finally:
        stop_process(proc)


async def test_the_lane_takes_over_a_tls_connection_with_auth(tls_url: str) -> None:
    """TLS, a user and password, a database: the lane's connection is opened as the client's
    are, and it reconnects (and authenticates again) after being killed."""
    clock = FakeClock()
    async with from_url(tls_url, prefix=random_prefix()) as b:
        lane = b.storage._lane
        assert lane is not None
        with anyio.fail_after(20):
            info = await lane.execute("CLIENT", "INFO")
            assert b"user=lane" in info and b"db=3" in info
            first = await enqueue_one(b, clock)
            async with aioredis.Redis.from_url(tls_url) as admin:
                assert await admin.client_kill_filter(_type="normal", skipme=True) >= 1
            second = await enqueue_one(b, clock)
            deliveries = await claim(b, clock)
            assert {d.task_id for d in deliveries} == {first, second}
            oks = await b.complete([done(d, clock) for d in deliveries], now=clock.time())
            assert oks == [True, True]
            records = await b.storage.get_many([first, second], now=clock.time())
            assert [r.status for r in records if r is not None] == [TaskStatus.DONE] * 2
