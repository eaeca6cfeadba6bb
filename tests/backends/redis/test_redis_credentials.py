"""The password of a Redis URL stays out of messages, and a refused login is said at once.

Issue 14, D6: a wrong password is reported as a refused login right away (not retried for
seconds as if the server were away), and no error message, log line or CLI output built from a
URL shows its password. The server here is a redis-server of the test's own, given a password
with ``CONFIG SET requirepass`` and stopped by its pid.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from taskflow import AuthenticationFailed, BackendUnavailable, ConfigError, QueueTasks
from taskflow.redis import from_url
from taskflow.redis._client import mask_secret
from tests.services import free_port, redis_url, start_redis_server, stop_process

pytestmark = pytest.mark.redis

PASSWORD = "TopSecret"


@pytest.fixture
async def guarded_port() -> AsyncIterator[int]:
    """A redis-server of this test's own that asks for `PASSWORD`."""
    redis_url()  # skip (or fail) with the usual reason if Redis is not installed/running
    port = free_port()
    proc: subprocess.Popen[bytes] = start_redis_server(port)
    try:
        async with aioredis.Redis(port=port) as admin:
            await admin.config_set("requirepass", PASSWORD)
        yield port
    finally:
        stop_process(proc)


async def test_a_wrong_password_is_a_refused_login_at_once(guarded_port: int) -> None:
    url = f"redis://:WrongOne@127.0.0.1:{guarded_port}/0"
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match="refused the login") as caught:
        async with from_url(url):
            pass
    assert time.monotonic() - started < 2.0
    assert "WrongOne" not in str(caught.value) and "***" in str(caught.value)


async def test_a_missing_password_is_a_refused_login(guarded_port: int) -> None:
    with pytest.raises(AuthenticationFailed, match="refused the login"):
        async with from_url(f"redis://127.0.0.1:{guarded_port}/0"):
            pass


async def test_the_right_password_opens(guarded_port: int) -> None:
    async with from_url(f"redis://:{PASSWORD}@127.0.0.1:{guarded_port}/0") as broker:
        assert PASSWORD not in broker.storage.describe()


async def test_a_login_refused_after_a_reconnect_is_not_retried(guarded_port: int) -> None:
    """The password changed on the server and the connection dropped: the next call fails at
    once (it was retried for about 6 s as if the server were away)."""
    async with from_url(f"redis://:{PASSWORD}@127.0.0.1:{guarded_port}/0") as broker:
        async with aioredis.Redis(port=guarded_port, password=PASSWORD) as admin:
            await admin.config_set("requirepass", "Changed1")
            await admin.client_kill_filter(_type="normal", skipme=True)
        started = time.monotonic()
        with pytest.raises(AuthenticationFailed, match="refused the login") as caught:
            await broker.stats(["default"], now=0.0)
        assert "Changed1" not in str(caught.value) and PASSWORD not in str(caught.value)
        assert time.monotonic() - started < 2.0


async def test_a_server_that_is_away_is_named_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Unreachable, through an app as users build it: the error and the log show no password."""
    app = QueueTasks("creds", broker=f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.DEBUG), pytest.raises(BackendUnavailable) as caught:
        async with app:
            pass
    assert "cannot reach Redis" in str(caught.value)
    assert PASSWORD not in str(caught.value) and PASSWORD not in caplog.text


def test_a_url_that_is_not_a_backend_url_is_named_without_the_password() -> None:
    for url in (f"redis+clusterr://:{PASSWORD}@h:1/0", f"rediss+x://u:{PASSWORD}@h:1/0"):
        with pytest.raises(ConfigError) as caught:
            QueueTasks("creds", broker=url)
        assert PASSWORD not in str(caught.value)
        assert "***" in str(caught.value)


def test_mask_secret_blots_out_the_password_in_any_text() -> None:
    url = f"redis://user:{PASSWORD}@h:1/0"
    assert mask_secret(f"AUTH user {PASSWORD} failed", url) == "AUTH user *** failed"
    assert mask_secret("nothing to hide", "redis://h:1/0") == "nothing to hide"
    assert mask_secret("a b", "redis://:a@h:1/0") == "a b"  # too short to blot out safely
