"""The pages a user acts on, in a real browser: the seed's export scenario (signed in, a task
submitted from the form generated from its signature, its progress followed live, its file
downloaded once), the same form refused by a read-only server, and a ``<script>`` in an error
message shown as text on the task and errors pages, never run."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Literal

import pytest
from playwright.async_api import expect

from taskflow import QueueTasks, TaskContext
from tests.web.browser.conftest import running_view, screenshot

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

TOKEN = "s3cret-token"
HOSTILE = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def export_app(url: str, permits: asyncio.Queue[None]) -> QueueTasks:
    """The seed's export: rows loaded in steps (one per permit), then a file to download."""
    app = QueueTasks("exports", broker=url)

    @app.task(name="export")
    async def export(ctx: TaskContext, rows: int, fmt: Literal["csv", "json"] = "csv") -> int:
        """Export `rows` rows as a file."""
        for done in range(1, rows + 1):
            await permits.get()
            ctx.progress(done, rows, f"loaded {done} of {rows}")
        body = "".join(f"{n},row {n}\n" for n in range(rows)).encode()
        await ctx.artifacts.put(f"export.{fmt}", body, delete_after_fetch=True)
        return rows

    return app


async def test_an_export_submitted_from_the_form_is_followed_and_downloaded_once(
    page: Any, tmp_path: Path
) -> None:
    permits: asyncio.Queue[None] = asyncio.Queue()
    app = export_app("memory://", permits)
    async with running_view(app, token=TOKEN) as view:
        await page.goto(f"{view.url}/submit.html?task=export")
        await page.fill("#token", TOKEN)
        await page.click("#sign-in button")
        await expect(page.locator("#sign-out")).to_be_visible()
        await page.fill("#param-rows", "2")
        await page.select_option("#param-fmt", label="csv")
        await screenshot(page, "submit-form")
        await page.click("#send")

        await expect(page).to_have_url(re.compile(r"task\.html\?id="))
        task_id = page.url.split("id=", 1)[1]
        await expect(page.locator("#task-name")).to_have_text("export")
        await expect(page.locator("body")).to_have_attribute("data-live", "live")
        permits.put_nowait(None)
        await expect(page.locator("#progress")).to_have_attribute("data-done", "1")
        permits.put_nowait(None)
        link = page.locator('tr[data-artifact="export.csv"] a')
        await expect(link).to_be_visible()
        await expect(page.locator("#result")).to_have_text("2")
        await screenshot(page, "task-done")

        async with page.expect_download() as info:
            await link.click()
        download = await info.value
        saved = tmp_path / download.suggested_filename
        await download.save_as(saved)
        assert saved.read_bytes() == b"0,row 0\n1,row 1\n"
        info_after = await app.result(task_id).artifact("export.csv")
        assert info_after.state != "ready"  # the download was the one fetch


async def test_a_read_only_server_refuses_the_form(page: Any) -> None:
    app = export_app("memory://", asyncio.Queue())
    async with running_view(app) as view:
        await page.goto(f"{view.url}/submit.html?task=export")
        await expect(page.locator("#read-only-note")).to_be_visible()
        await page.fill("#param-rows", "2")
        await page.click("#send")
        await expect(page.locator("#notice")).to_contain_text("read_only")
        stats = (await app.broker.stats(["default"], now=app.clock.time()))[0]
        assert (stats.queued, stats.running) == (0, 0)


async def test_a_script_in_an_error_message_is_shown_as_text(page: Any) -> None:
    app = QueueTasks("hostile", broker="memory://")

    @app.task(name="broken", retries=0)
    async def broken(note: str) -> None:
        raise ValueError(HOSTILE)

    async with running_view(app) as view:
        handle = await broken.add_task(HOSTILE)  # an argument is user-supplied text too
        with pytest.raises(Exception, match="onerror"):
            await handle.result(timeout=10)
        await page.goto(f"{view.url}/task.html?id={handle.task_id}")
        await expect(page.locator("#error-message")).to_have_text(f"ValueError: {HOSTILE}")
        await expect(page.locator("#arguments")).to_contain_text('"args"')
        assert HOSTILE in (await page.locator("#arguments").text_content() or "").replace(
            '\\"', '"'
        )
        await screenshot(page, "task-error")
        await page.goto(f"{view.url}/errors.html")
        await expect(page.locator("#errors .error-message")).to_have_text(f"ValueError: {HOSTILE}")
        assert await page.evaluate("window.__xss") is None
        assert await page.locator("main img").count() == 0


async def test_the_queues_page_under_a_prefix_shows_counts_and_events_live(page: Any) -> None:
    app = QueueTasks("shop", broker="memory://")
    release = asyncio.Event()

    @app.task(name="slow")
    async def slow() -> None:
        await release.wait()

    async with running_view(app, prefix="/tasks") as view:
        await page.goto(f"{view.url}/tasks/")
        row = page.locator('tr[data-queue="default"]')
        await expect(row.locator(".running")).to_have_text("0")
        await expect(page.locator("body")).to_have_attribute("data-live", "live")
        handle = await slow.add_task()
        await expect(row.locator(".running")).to_have_text("1")  # pushed with the counts
        await expect(page.locator("#recent tr").first).to_contain_text("slow")
        await screenshot(page, "queues")
        release.set()
        await handle.result(timeout=10)
        await expect(row.locator(".running")).to_have_text("0")


PAGES = ["index", "tasks", "workers", "errors", "locks", "schedules", "orders", "dead", "submit"]


async def test_every_page_loads_with_content_and_no_script_error(page: Any) -> None:
    app = QueueTasks("tour", broker="memory://")

    @app.periodic(cron="0 3 * * *", tz="UTC")
    @app.task(name="nightly_report")
    async def nightly_report() -> None:
        """Once a night."""

    @app.task(name="import_rows", retries=0)
    async def import_rows(source: str, limit: int = 100) -> None:
        raise KeyError(source)

    async with running_view(app) as view, app.lock("dwh.sales", shared=True):
        with pytest.raises(Exception, match="KeyError"):
            await (await import_rows.add_task("s3://bucket/day.csv")).result(timeout=10)
        for name in PAGES:
            await page.goto(f"{view.url}/{name}.html")
            await expect(page.locator("header nav a.current")).to_have_count(1)
            await expect(page.locator("#page h1")).to_be_visible()
        await page.goto(f"{view.url}/workers.html")
        await expect(page.locator("#workers tr[data-worker]")).to_have_count(1)
        await screenshot(page, "workers")
        await page.goto(f"{view.url}/errors.html")
        await expect(page.locator("#errors tr")).to_have_count(1)
        await screenshot(page, "errors")
        await page.goto(f"{view.url}/locks.html")
        await expect(page.locator('#locks tr[data-lock="dwh.sales"]')).to_be_visible()
        await page.goto(f"{view.url}/schedules.html")
        await expect(page.locator("#schedules tr[data-schedule]")).to_have_count(1)
