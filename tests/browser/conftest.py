"""The browser suite's harness: one headless Chromium per test session, driven by
Playwright's async API, and a web view served in the test's own process.

* ``browser``: Debian's ``/usr/bin/chromium`` (``scripts/services`` installs it), launched once
  per session with the flags below; Playwright downloads nothing. Missing Chromium or
  Playwright skips the suite, or fails it under ``TASKFLOW_REQUIRE_SERVICES=1`` as missing
  servers do (``tests/services.py``).
* ``page``: a fresh browser context (own cookies) and page per test; a JavaScript error on
  the page (``pageerror``) fails the test.
* `ServedView`: `taskflow.web.create_app` under uvicorn on a free loopback port, in the test's
  event loop, beside the worker: the only way to show a memory backend, and the same code the
  ``taskflow web`` command runs. ``stop()`` and ``start()`` again on the same port restart it.
* `screenshot`: writes a PNG under ``build/screenshots/`` (``TASKFLOW_SCREENSHOTS_DIR``
  overrides), kept as a test artifact; docs/web.md shows copies of them.

Every test of this directory runs in the session's event loop (``pytestmark`` in each
module), the loop the browser lives in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio

from taskflow import QueueTasks, Worker
from tests.services import chromium_path, free_port, poll_until

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("TASKFLOW_SCREENSHOTS_DIR") or REPO / "build" / "screenshots")
#: How long a page may take to show what the test waits for (ms, Playwright's unit).
UI_TIMEOUT_MS = 15_000


@pytest.fixture(params=["memory", "redis", "postgres"])
def view_backend_url(request: pytest.FixtureRequest) -> str:
    """A URL of each backend kind the web view is tested on, in a namespace of the test's own."""
    url: str = request.getfixturevalue(f"backend_url_{request.param}")
    return url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium for the whole session (one browser, a context per test)."""
    executable = chromium_path()
    async_api = pytest.importorskip("playwright.async_api")
    async_api.expect.set_options(timeout=UI_TIMEOUT_MS)
    async with async_api.async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Any) -> AsyncIterator[Any]:
    """A page in a context of its own; JavaScript errors on it fail the test."""
    context = await browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(UI_TIMEOUT_MS)
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        await context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


class ServedView:
    """The web view of `app` served by uvicorn on 127.0.0.1 in this event loop."""

    def __init__(self, app: QueueTasks, *, token: str | None = None) -> None:
        self.app = app
        self.token = token
        self.port = free_port()
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        """Serve (again, on the same port), returning once it accepts connections."""
        import uvicorn

        from taskflow.web import create_app

        config = uvicorn.Config(
            create_app(self.app, token=self.token),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            ws="websockets-sansio",  # as `taskflow web` serves it
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        # uvicorn offers a flag, not an event, for "listening".
        await poll_until(lambda: self._server.started or self._task.done(), deadline_s=10)
        if not self._server.started:
            self._task.result()  # raises what stopped it
            raise RuntimeError(f"uvicorn on port {self.port} stopped at start-up")

    async def stop(self) -> None:
        """Shut the server down (open WebSockets are closed) and wait until it has."""
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._task = None

    async def __aenter__(self) -> ServedView:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@contextlib.asynccontextmanager
async def served(app: QueueTasks, *, token: str | None = None) -> AsyncIterator[ServedView]:
    """`app` open, a worker running its tasks and its web view served, all in this process
    (as ``taskflow web --with-worker`` does); everything stopped on exit."""
    async with app, anyio.create_task_group() as tg:
        await tg.start(Worker(app, concurrency=4).run)
        async with ServedView(app, token=token) as view:
            yield view
        tg.cancel_scope.cancel()


async def screenshot(page: Any, name: str) -> Path:
    """Save the page as ``<SCREENSHOTS>/<name>.png`` and return the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
