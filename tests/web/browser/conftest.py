"""The browser suite's harness: one headless Chromium per test session, driven by
Playwright's async API, and a web view served in the test's own process.

* ``browser``: Debian's ``/usr/bin/chromium`` (``scripts/services`` installs it), launched once
  per session with the flags below; Playwright downloads nothing. Missing Chromium or
  Playwright skips the suite, or fails it under ``TASKFLOW_REQUIRE_SERVICES=1`` as missing
  servers do (``tests/services.py``).
* ``page``: a fresh browser context (own cookies) and page per test; a JavaScript error on
  the page (``pageerror``) fails the test.
* `running_view`: the app open, a worker, and `taskflow.web.create_app` under uvicorn on a
  free loopback port (``tests/web/conftest.py``'s `served`), all in the test's event loop: the
  only way to show a memory backend, and what ``taskflow web --with-worker`` runs.
* `screenshot`: writes a PNG under ``build/screenshots/`` (``TASKFLOW_SCREENSHOTS_DIR``
  overrides), kept as a test artifact; docs/web.md shows copies of them.

Every test of this directory runs in the session's event loop (``pytestmark`` in each
module), the loop the browser lives in.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio
from fastapi import FastAPI
from starlette.routing import Mount

from taskflow import QueueTasks, Worker
from taskflow.web import create_app
from tests.services import chromium_path
from tests.web.conftest import Served, served

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
REPO = Path(__file__).resolve().parents[3]
SCREENSHOTS = Path(os.environ.get("TASKFLOW_SCREENSHOTS_DIR") or REPO / "build" / "screenshots")
#: How long a page may take to show what the test waits for (ms, Playwright's unit).
UI_TIMEOUT_MS = 15_000


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
    context = await browser.new_context(
        accept_downloads=True, viewport={"width": 1280, "height": 800}
    )
    context.set_default_timeout(UI_TIMEOUT_MS)
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        await context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@contextlib.asynccontextmanager
async def running_view(
    app: QueueTasks, *, token: str | None = None, prefix: str = ""
) -> AsyncIterator[Served]:
    """`app` open, a worker running its tasks and its web view served (`Served`: stop and
    start it again to restart it on the same port), all in this process, as ``taskflow web
    --with-worker`` does; everything stopped on exit. With `prefix` (``"/tasks"``), the view is
    mounted there in a FastAPI app, as a user's service would serve it."""
    asgi: Any = create_app(app, token=token)
    if prefix:
        asgi = FastAPI(routes=[Mount(prefix, app=asgi)])
    async with app, anyio.create_task_group() as tg:
        await tg.start(Worker(app, concurrency=4).run)
        async with served(asgi) as view:
            yield view
        tg.cancel_scope.cancel()


async def screenshot(page: Any, name: str) -> Path:
    """Save the page as ``<SCREENSHOTS>/<name>.png`` and return the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
