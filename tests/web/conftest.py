"""Fixtures of the web view's tests: a URL of each backend kind the view is tested on
(memory, Redis, PostgreSQL), an HTTP client over the ASGI app (same event loop as the test,
so the test's workers and the view share the app), and a real uvicorn server on a free port
for the WebSocket tests (stopped and started again to test resuming)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from taskflow.cli._web import bind
from tests.services import poll_until

WEB_KINDS = ("memory", "redis", "postgres")


@pytest.fixture(params=WEB_KINDS, ids=WEB_KINDS)
def web_url(request: pytest.FixtureRequest) -> str:
    """A URL of the kind's server, in a namespace of the test's own."""
    url: str = request.getfixturevalue(f"backend_url_{request.param}")
    return url


@contextlib.asynccontextmanager
async def client_of(asgi: Any, base: str = "http://web") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to `asgi` in this event loop (no socket)."""
    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        yield client


async def signed_in(client: httpx.AsyncClient, token: str, prefix: str = "") -> dict[str, str]:
    """Sign `client` in with `token`; the headers its changes must carry (the CSRF token)."""
    session = (await client.get(f"{prefix}/api/session")).json()
    answer = await client.post(
        f"{prefix}/api/login", json={"token": token}, headers={"X-CSRF-Token": session["csrf"]}
    )
    assert answer.status_code == 200, answer.text
    return {"X-CSRF-Token": answer.json()["csrf"]}


class Served:
    """A uvicorn server of an ASGI app in this event loop, on a port that stays the same
    across `stop` and `start` (a restart, as the pages see it)."""

    def __init__(self, asgi: Any) -> None:
        self.asgi = asgi
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        sock = self._sock = bind("127.0.0.1", self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.asgi, lifespan="off", log_level="warning", ws="websockets-sansio"
        )
        server = self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        await poll_until(lambda: server.started or self._task.done(), deadline_s=10)
        if self._task.done():
            self._task.result()  # its error

    async def stop(self) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        try:
            await self._task
        finally:
            if self._sock is not None:
                self._sock.close()


@contextlib.asynccontextmanager
async def served(asgi: Any) -> AsyncIterator[Served]:
    """`asgi` served by uvicorn on a free port for the block."""
    server = Served(asgi)
    await server.start()
    try:
        yield server
    finally:
        if server._task is not None and not server._task.done():
            await server.stop()
