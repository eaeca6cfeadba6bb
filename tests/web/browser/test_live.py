"""The live pages in a real browser, on every backend: the queue's task list shows a task
sent from the test and moves its progress bar to done over the page's WebSocket, and a
server restarted in the middle leaves the page with every event once (none missed, none
repeated)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from playwright.async_api import expect

from taskflow import QueueTasks, TaskContext
from tests.web.browser.conftest import running_view, screenshot


def js_number(value: float) -> str:
    """`value` as JavaScript writes a number in a template string."""
    return str(int(value)) if value == int(value) else repr(value)


pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

#: Tasks sent at once by the burst test (each makes three events: queued, running, done).
BURST = 2000


async def test_a_task_sent_appears_and_its_progress_bar_reaches_done(
    page: Any, web_url: str, tmp_path: Any
) -> None:
    app = QueueTasks("webview", broker=web_url)
    permits: asyncio.Queue[None] = asyncio.Queue()

    @app.task(name="export")
    async def export(ctx: TaskContext, rows: int) -> str:
        for done in range(1, rows + 1):
            await permits.get()  # the test lets each step through once the page showed the last
            ctx.progress(done, rows, f"loaded {done} of {rows}")
        return f"{rows} rows"

    async with running_view(app) as view:
        await page.goto(f"{view.url}/tasks.html?queue=default")
        await expect(page.locator("body")).to_have_attribute("data-live", "live")
        handle = await export.add_task(3)
        row = page.locator(f'tr[data-task-id="{handle.task_id}"]')
        await expect(row.locator(".name")).to_have_text("export")
        bar = row.locator(".bar")
        for done in (1, 2):
            permits.put_nowait(None)
            await expect(bar).to_have_attribute("data-done", str(done))
            await expect(bar).to_have_attribute("data-total", "3")
        await screenshot(page, "tasks-live")
        permits.put_nowait(None)
        await expect(row.locator(".status")).to_have_text("done")
        await expect(bar).to_have_class(re.compile(r"\bcomplete\b"))
        assert await handle.result(timeout=10) == "3 rows"


async def test_a_restarted_server_leaves_the_page_with_every_event_once(
    page: Any, web_url: str
) -> None:
    app = QueueTasks("webview", broker=web_url)

    @app.task(name="step")
    async def step(n: int) -> int:
        return n

    async def send_and_finish(numbers: range) -> None:
        handles = [await step.add_task(n) for n in numbers]
        for handle in handles:
            await handle.result(timeout=10)

    async def stream_events() -> list[str]:
        """The queue's events as the page records them (cursors are opaque: one event can be
        reached through different cursors, so the events are compared, not their cursors)."""
        events = await app.storage.read_events("default", limit=10_000)
        return [f"{e.task_id} {e.kind.value} {e.attempt} {js_number(e.at)}" for e in events]

    async with running_view(app) as view:
        await page.goto(f"{view.url}/tasks.html?queue=default")
        body = page.locator("body")
        await expect(body).to_have_attribute("data-live", "live")
        await send_and_finish(range(5))
        before = await stream_events()
        await expect(body).to_have_attribute("data-events-applied", str(len(before)))

        await view.stop()
        await expect(body).to_have_attribute("data-live", "reconnecting")
        await send_and_finish(range(5, 10))  # while nobody serves the page
        await view.start()

        after = await stream_events()
        assert len(after) > len(before)
        await expect(body).to_have_attribute("data-events-applied", str(len(after)))
        assert await page.evaluate("window.taskflowLive.seen") == after
        assert await page.evaluate("window.taskflowLive.connections") == 2
        await expect(page.locator("td.name", has_text="step")).to_have_count(10)
        await expect(page.locator(".status-done")).to_have_count(10)


async def test_a_burst_of_events_is_applied_once_per_frame_and_the_list_stays_bounded(
    page: Any,
) -> None:
    app = QueueTasks("burst", broker="memory://")

    @app.task(name="tick")
    async def tick(n: int) -> int:
        return n

    async with running_view(app) as view:
        await page.goto(f"{view.url}/tasks.html?queue=default")
        body = page.locator("body")
        await expect(body).to_have_attribute("data-live", "live")
        started = time.monotonic()
        handles = [await tick.add_task(n) for n in range(BURST)]
        for handle in handles:
            await handle.result(timeout=30)
        events = len(await app.storage.read_events("default", limit=100_000))
        await expect(body).to_have_attribute("data-events-applied", str(events))
        elapsed = time.monotonic() - started
        live = await page.evaluate(
            "({frames: taskflowLive.frames, messages: taskflowLive.messages,"
            " rows: document.querySelectorAll('#tasks tr').length})"
        )
        print(f"\n{events} events in {elapsed:.2f}s: {live}")
        assert live["frames"] <= live["messages"]
        # The rows added live are capped at 500; the first page read over HTTP (50) stays.
        assert live["rows"] <= 500 + 50
