"""PostgreSQL's driver errors reach callers as taskflow's, and never show a password (issue 14,
D6 and D7).

A refused login is `AuthenticationFailed` at once (not retried as if the server were away); a
server that cannot be reached, a connection lost for good and a statement the server refuses
are `BackendUnavailable`, the driver's error kept as ``__cause__``. Every message, log line and
line of CLI output names the server with its password masked.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

from taskflow import AuthenticationFailed, BackendUnavailable, QueueTasks
from taskflow.cli import ExitCode
from taskflow.postgres import from_url, upgrade
from taskflow.testing import FakeClock
from tests.backends.postgres.pg_proxy import reply_losing_proxy
from tests.cli_support import run_cli, write_app
from tests.conformance._helpers import message
from tests.plugins.backend_postgres import drop_schema, random_schema
from tests.services import free_port, postgres_dsn

pytestmark = pytest.mark.postgres

_SECRET = "S3cret-pw-14"
#: A refused login is reported within about a second (no retries).
_AT_ONCE_S = 1.0

_APP = """
from taskflow import QueueTasks

app = QueueTasks("secret", broker={url!r})


@app.task
async def add(a: int, b: int) -> int:
    return a + b
"""


def _with_password(dsn: str, password: str, port: int | None = None) -> str:
    """`dsn` with its password replaced (and its port, if given)."""
    parts = urlsplit(dsn)
    host = f"{parts.hostname}:{port or parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@{host}"))


def _assert_masked(text: str) -> None:
    assert _SECRET not in text, text


async def test_a_wrong_password_is_reported_at_once_as_such(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = _with_password(postgres_dsn(), _SECRET)
    app = QueueTasks("secret", broker=url)
    started = time.monotonic()
    with anyio.fail_after(10), pytest.raises(AuthenticationFailed) as caught:
        async with app:
            pass
    assert time.monotonic() - started < _AT_ONCE_S
    text = str(caught.value)
    assert "refused the login" in text and ":***@" in text, text
    assert isinstance(caught.value.__cause__, asyncpg.InvalidPasswordError)
    assert isinstance(caught.value, BackendUnavailable)  # what callers caught before
    with anyio.fail_after(10), pytest.raises(AuthenticationFailed) as again:
        await upgrade(url)
    _assert_masked(str(again.value))
    _assert_masked(caplog.text)
    _assert_masked(text)


async def test_a_statement_the_server_refuses_is_backend_unavailable() -> None:
    """What gets past the producer's checks (a broker used directly) is still taskflow's."""
    clock = FakeClock()
    schema = random_schema()
    try:
        async with from_url(postgres_dsn(), schema=schema) as broker:
            bad = message(broker, queue="a\x00b")
            with pytest.raises(BackendUnavailable, match="refused the call") as caught:
                await broker.enqueue([bad], now=clock.time())
            cause = caught.value.__cause__
            assert isinstance(cause, asyncpg.exceptions.CharacterNotInRepertoireError)
            assert await broker.stats(["default"], now=clock.time())  # still usable
    finally:
        await drop_schema(postgres_dsn(), schema)


@pytest.mark.slow
async def test_a_server_gone_for_good_after_open_is_backend_unavailable_with_no_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The calls retry for about 15 s, then raise taskflow's error, not the driver's
    ConnectionRefusedError; neither it nor the retries' log lines show the password."""
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    schema = random_schema()
    password = urlsplit(postgres_dsn()).password
    try:
        async with reply_losing_proxy(postgres_dsn()) as proxy:
            broker = from_url(proxy.dsn(), schema=schema)
            await broker.open()
            await proxy.close()  # the "server" is gone: connections cut, the port refuses
            with anyio.fail_after(60), pytest.raises(BackendUnavailable) as caught:
                await broker.storage.get("nope", now=clock.time())
            await broker.close()
        text = str(caught.value)
        assert text.startswith("cannot reach PostgreSQL at ") and ":***@" in text, text
        assert isinstance(caught.value.__cause__, OSError)
        assert f":{password}@" not in text and f":{password}@" not in caplog.text
        assert "retry 1 in" in caplog.text  # it did retry, as for a server restarting
    finally:
        await drop_schema(postgres_dsn(), schema)


@pytest.mark.parametrize(
    "command",
    [
        ["status", "secret_app:app", "some-id"],
        ["send", "secret_app:app", "add", "--args", "[1, 2]"],
        ["worker", "secret_app:app"],
        ["db", "upgrade", "{url}"],
    ],
)
@pytest.mark.parametrize("down", [True, False], ids=["server-down", "wrong-password"])
def test_the_cli_never_prints_the_password(tmp_path: Path, command: list[str], down: bool) -> None:
    url = _with_password(postgres_dsn(), _SECRET, port=free_port() if down else None)
    write_app(tmp_path, "secret_app", _APP.format(url=url))
    args = [part.format(url=url) for part in command]
    done = run_cli(tmp_path, "--log-level", "DEBUG", *args)
    assert done.returncode == ExitCode.UNAVAILABLE, done.stderr
    _assert_masked(done.stdout + done.stderr)
    last = done.stderr.strip().splitlines()[-1]
    expected = "cannot reach PostgreSQL" if down else "refused the login"
    assert expected in last and ":***@" in last, last
