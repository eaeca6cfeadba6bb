"""The `taskflow` command against a Redis holding bad data (issue 14).

``taskflow dead-letters`` lists a dead letter whose stored message does not decode, marked,
next to the others (D5: it printed a traceback).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflow.cli import ExitCode
from taskflow.redis import RedisBroker, from_url
from taskflow.testing import FakeClock
from tests.cli_support import drop_shared, env_for, run_cli, shared_url, write_app
from tests.conformance._helpers import claim, enqueue_one, failed

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
