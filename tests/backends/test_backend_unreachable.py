"""A server nobody listens on: opening the app fails at once with `BackendUnavailable`, saying
where (the URL, its password masked) and why, on every server backend; and `describe()` says
where a storage keeps its tasks."""

from __future__ import annotations

import time

import anyio
import pytest

from taskflow import BackendUnavailable, QueueTasks
from taskflow._backends import mask_password
from taskflow.memory import MemoryBroker
from taskflow.postgres import from_url as postgres_from_url
from taskflow.postgres import upgrade
from taskflow.redis import from_url as redis_from_url
from tests.services import free_port

#: A refused connection is reported within about a second (the reconnect retries of a working
#: connection do not apply to the first contact).
_AT_ONCE_S = 1.0


def _urls(port: int) -> dict[str, str]:
    return {
        "redis": f"redis://:s3cret@127.0.0.1:{port}/0",
        "redis_cluster": f"redis+cluster://:s3cret@127.0.0.1:{port}",
        "postgres": f"postgresql://taskflow:s3cret@127.0.0.1:{port}/taskflow",
    }


@pytest.mark.parametrize("kind", ["redis", "redis_cluster", "postgres"])
async def test_opening_an_app_on_a_port_nobody_listens_on_fails_at_once(kind: str) -> None:
    url = _urls(free_port())[kind]
    app = QueueTasks(name="down", broker=url)
    started = time.monotonic()
    with anyio.fail_after(10), pytest.raises(BackendUnavailable) as caught:
        async with app:
            pass
    took = time.monotonic() - started
    message = str(caught.value)
    assert took < _AT_ONCE_S, took
    assert message.startswith("cannot reach "), message
    assert "Connect call failed" in message or "Connection refused" in message, message
    assert "s3cret" not in message and ":***@127.0.0.1" in message, message
    assert not app.is_open


async def test_postgres_upgrade_on_a_port_nobody_listens_on() -> None:
    url = _urls(free_port())["postgres"]
    with anyio.fail_after(10), pytest.raises(BackendUnavailable, match="cannot reach PostgreSQL"):
        await upgrade(url)


def test_describe_names_the_server_with_its_password_masked() -> None:
    assert MemoryBroker().storage.describe() == "memory:// (inside this process)"
    redis = redis_from_url("redis://:pw@h:6379/2?prefix=shop", app="billing").storage
    assert redis.describe() == "redis://:***@h:6379/2 (key prefix 'shop:billing')"
    cluster = redis_from_url("redis+cluster://u:pw@h:7000", app="billing").storage
    assert cluster.describe() == "redis+cluster://u:***@h:7000 (key prefix 'taskflow:billing')"
    pg = postgres_from_url("postgresql://u:pw@h/db", app="billing").storage
    assert pg.describe() == "postgresql://u:***@h/db (schema 'taskflow_billing')"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?sslmode=require&password=x",
            "postgresql://u@h/db?sslmode=require&password=***",
        ),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("postgresql://u:p@ss:w@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:pw@[bad/db?password=x", "postgresql://u:***@[bad/db?password=***"),
        ("postgresql://u:pw@h1:5432,h2:5433/db", "postgresql://u:***@h1:5432,h2:5433/db"),
        ("memory://", "memory://"),
    ],
)
def test_mask_password(url: str, masked: str) -> None:
    assert mask_password(url) == masked
