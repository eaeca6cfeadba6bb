"""The `taskflow` command against a Redis with bad data or a URL with a password (issue 14).

``taskflow dead-letters`` lists a dead letter whose stored message does not decode, marked,
next to the others (D5: it printed a traceback); a command whose server is away names it
without the URL's password (D6).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflow.cli import ExitCode
from taskflow.redis import RedisBroker, from_url
from taskflow.testing import FakeClock
from tests.cli_support import drop_shared, env_for, run_cli, shared_url, write_app
from tests.conformance._helpers import claim, enqueue_one, failed
from tests.services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.redis]

APP = """
import os

from taskflow import QueueTasks

app = QueueTasks(name="cli-test", broker=os.environ["TF_URL"])
"""


@pytest.fixture
def url() -> Iterator[str]:
    value = shared_url("redis")
    try:
        yield value
    finally:
        drop_shared(value)


async def _two_dead_letters_one_corrupt(url: str) -> tuple[str, str]:
    """Two failed tasks of app "cli-test" at `url`; the stored message of the second made
    undecodable. Returns (good id, bad id)."""
    clock = FakeClock()
    base, _, prefix = url.partition("?prefix=")
    async with from_url(base, prefix=prefix, app="cli-test") as broker:
        assert isinstance(broker, RedisBroker)
        good, bad = await enqueue_one(broker, clock), await enqueue_one(broker, clock)
        deliveries = await claim(broker, clock)
        await broker.complete([failed(d, clock) for d in deliveries], now=clock.time())
        key = broker.storage.qkey("default", f"t:{bad}")
        await broker.storage.client.hset(key, "msg", b"\xc1 not msgpack")
        return good, bad


def test_dead_letters_lists_a_corrupt_one_marked_among_the_others(tmp_path: Path, url: str) -> None:
    good, bad = asyncio.run(_two_dead_letters_one_corrupt(url))
    app = write_app(tmp_path, "badapp", APP)
    done = run_cli(tmp_path, "dead-letters", app, env=env_for(tmp_path, TF_URL=url))
    assert done.returncode == ExitCode.OK, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith(good) and "tests.task" in line for line in lines)
    assert any(line.startswith(bad) and "undecodable" in line for line in lines)
    assert "Traceback" not in done.stderr


def test_an_unreachable_server_is_named_without_the_password(tmp_path: Path) -> None:
    secret = "TopSecret" + os.urandom(3).hex()
    url = f"redis://:{secret}@127.0.0.1:{free_port()}/0"
    app = write_app(tmp_path, "awayapp", APP)
    done = run_cli(tmp_path, "stats", app, env=env_for(tmp_path, TF_URL=url))
    assert done.returncode == ExitCode.UNAVAILABLE, done.stderr
    assert "cannot reach Redis" in done.stderr
    assert secret not in done.stderr + done.stdout
