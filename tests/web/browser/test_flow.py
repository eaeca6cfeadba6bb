"""A flow's page in a real browser: the graph drawn by depth, and each node turning green as
its task finishes, pushed over the page's WebSocket."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import expect

from taskflow import QueueTasks
from tests.web.browser.conftest import running_view, screenshot

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

GREEN = "rgb(46, 158, 79)"  # --done in taskflow.css


async def test_a_flows_nodes_turn_green_as_they_finish(page: Any) -> None:
    app = QueueTasks("flows", broker="memory://")
    gates = {name: asyncio.Event() for name in ("load", "total", "count", "report")}

    @app.task(name="load")
    async def load(day: str) -> int:
        await gates["load"].wait()
        return 10

    @app.task(name="total")
    async def total(day: str) -> int:
        await gates["total"].wait()
        return 20

    @app.task(name="count")
    async def count(day: str) -> int:
        await gates["count"].wait()
        return 2

    @app.task(name="report")
    async def report(day: str) -> str:
        await gates["report"].wait()
        return day

    async with running_view(app) as view:
        flow = app.flow("nightly")
        rows = flow.add(load, "2026-12-05")
        summed = flow.add(total, "2026-12-05", after=[rows])
        counted = flow.add(count, "2026-12-05", after=[rows])
        flow.add(report, "2026-12-05", after=[summed, counted])
        handle = await flow.submit()

        await page.goto(f"{view.url}/flow.html?id={handle.flow_id}")
        nodes = {
            name: page.locator(f'g.node[data-task-id="{task_id}"]')
            for name, task_id in handle.tasks.items()
        }
        await expect(page.locator("g.node")).to_have_count(4)
        await expect(page.locator("path.edge")).to_have_count(4)
        await expect(page.locator("body")).to_have_attribute("data-live", "live")
        await expect(nodes["report"]).to_have_attribute("data-status", "waiting")

        for name in ("load", "total"):
            gates[name].set()
            await expect(nodes[name]).to_have_attribute("data-status", "done")
            await expect(nodes[name].locator("rect")).to_have_css("fill", GREEN)
        await expect(nodes["count"]).to_have_attribute("data-status", "running")
        await screenshot(page, "flow")
        gates["count"].set()
        gates["report"].set()
        for node in nodes.values():
            await expect(node).to_have_attribute("data-status", "done")
        await expect(page.locator("#rollup")).to_have_attribute("data-state", "succeeded")
