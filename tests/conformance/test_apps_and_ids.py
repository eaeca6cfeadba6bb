"""Conformance: apps with different names on one server share nothing, and task ids have one
URL-safe, shell-safe shape on every backend."""

from __future__ import annotations

import re
import shlex
from urllib.parse import quote

import anyio

from taskflow import QueueTasks, TaskStatus
from taskflow.abc import Broker
from taskflow.testing import FakeClock

from ._helpers import enqueue_one

#: The documented shape (docs/concepts.md), written out rather than imported.
TASK_ID = re.compile(r"[0-9a-hjkmnp-tv-z]{30}")


async def test_apps_with_different_names_on_one_server_never_see_each_others_tasks(
    backend_url: str,
) -> None:
    """Two apps on one server, both with a task ``work`` on the queue ``default``: while only
    billing's worker runs, shop's tasks stay queued (they are not billing's to run); then
    shop's own worker runs them, and neither app can look up the other's tasks."""
    billing = QueueTasks("billing", broker=backend_url)
    shop = QueueTasks("shop", broker=backend_url)

    @billing.task(name="work")
    async def bill(i: int) -> str:
        return f"billing {i}"

    @shop.task(name="work")
    async def sell(i: int) -> str:
        return f"shop {i}"

    with anyio.fail_after(30):
        async with billing, shop:
            sold = [await sell.add_task(i) for i in range(5)]
            async with billing.running(concurrency=4):
                billed = [await bill.add_task(i) for i in range(5)]
                assert [await h.result() for h in billed] == [f"billing {i}" for i in range(5)]
            for handle in sold:
                record = await shop.get(handle.task_id)
                assert record is not None and record.status is TaskStatus.QUEUED
            async with shop.running(concurrency=4):
                assert [await h.result() for h in sold] == [f"shop {i}" for i in range(5)]
            assert await billing.get(sold[0].task_id) is None
            assert await shop.get(billed[0].task_id) is None


async def test_task_ids_have_one_url_and_shell_safe_shape(
    backend: Broker, clock: FakeClock
) -> None:
    for queue in ("default", "emails.high-priority", "q ü/1"):
        task_id = await enqueue_one(backend, clock, queue=queue)
        assert TASK_ID.fullmatch(task_id), task_id
        assert quote(task_id, safe="") == task_id
        assert shlex.quote(task_id) == task_id
        record = await backend.storage.get(task_id, now=clock.time())
        assert record is not None and record.queue == queue


def test_task_ids_sort_in_the_order_they_were_made(backend: Broker) -> None:
    ids = [backend.new_task_id(queue) for _ in range(2_000) for queue in ("default", "other")]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
