"""Tests of the test plumbing: the servers in the environment answer, a missing one skips or
fails as configured, private Redis servers start and stop by pid, and plugins are discovered."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import asyncpg
import pytest
import redis.asyncio

from tests import services
from tests.conftest import discover_backend_plugins


@pytest.mark.redis
async def test_redis_url_reaches_a_server_that_answers_ping() -> None:
    client = redis.asyncio.from_url(services.redis_url())
    try:
        with anyio.fail_after(10):
            assert await client.ping() is True
    finally:
        await client.aclose()


@pytest.mark.postgres
async def test_postgres_dsn_reaches_a_database_that_runs_select_1() -> None:
    with anyio.fail_after(10):
        connection = await asyncpg.connect(services.postgres_dsn())
        try:
            assert await connection.fetchval("SELECT 1") == 1
        finally:
            await connection.close()


@pytest.fixture
def silent_redis_url(monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the Redis variable at a port where nothing listens."""
    url = f"redis://127.0.0.1:{services.free_port()}/0"
    monkeypatch.setenv(services.REDIS_ENV, url)
    return url


def test_a_silent_server_fails_the_test_when_services_are_required(
    monkeypatch: pytest.MonkeyPatch, silent_redis_url: str
) -> None:
    monkeypatch.setenv(services.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception) as failed:
        services.redis_url()
    message = str(failed.value)
    assert silent_redis_url in message
    assert "does not answer" in message
    assert "scripts/services" in message
    assert services.REQUIRE_ENV in message


def test_a_silent_server_skips_the_test_when_services_are_optional(
    monkeypatch: pytest.MonkeyPatch, silent_redis_url: str
) -> None:
    monkeypatch.delenv(services.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        services.redis_url()
    assert "does not answer" in str(skipped.value)


@pytest.mark.parametrize("require", ["1", None])
def test_an_unset_variable_names_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, require: str | None
) -> None:
    monkeypatch.delenv(services.POSTGRES_ENV, raising=False)
    if require is None:
        monkeypatch.delenv(services.REQUIRE_ENV, raising=False)
        expected: type[BaseException] = pytest.skip.Exception
    else:
        monkeypatch.setenv(services.REQUIRE_ENV, require)
        expected = pytest.fail.Exception
    with pytest.raises(expected) as outcome:
        services.postgres_dsn()
    assert services.POSTGRES_ENV in str(outcome.value)
    assert "scripts/services" in str(outcome.value)


def test_free_port_can_be_bound() -> None:
    import socket

    port = services.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 0 < port < 65536


@pytest.mark.redis
def test_a_private_redis_server_starts_answers_and_stops_by_pid() -> None:
    port = services.free_port()
    proc = services.start_redis_server(port)
    try:
        assert services.redis_ping("127.0.0.1", port)
    finally:
        services.stop_process(proc)
    assert proc.returncode is not None
    assert not services.redis_ping("127.0.0.1", port)


def test_backend_plugins_are_found_by_file_name(tmp_path: Path) -> None:
    for name in ["__init__.py", "backend_redis.py", "backend_memory.py", "helpers.py"]:
        (tmp_path / name).write_text("")
    assert discover_backend_plugins(tmp_path) == [
        "tests.plugins.backend_memory",
        "tests.plugins.backend_redis",
    ]


def test_every_backend_plugin_in_the_tree_is_loaded() -> None:
    conftest = sys.modules["tests.conftest"]
    assert conftest.pytest_plugins == discover_backend_plugins()
    missing = [name for name in conftest.pytest_plugins if name not in sys.modules]
    assert missing == []
