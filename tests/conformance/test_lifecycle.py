"""Conformance: a backend's lifecycle across closes and event loops.

A closed backend opens again with everything it stored (the memory backend keeps its data for
the life of the object, like a server), and `abandon()` lets go of a backend whose event loop
ended without touching that loop; it then opens and works on another loop. Apps rely on both to
reopen on each event loop they are used from (``tests/core/test_lifecycle.py``).
"""

from __future__ import annotations

import asyncio
import gc

import anyio
import anyio.to_thread
import pytest

from taskflow.abc import Broker, TaskStatus
from taskflow.testing import FakeClock

from ._helpers import claim, done, enqueue_one


async def _complete_and_wait(backend: Broker, clock: FakeClock, task_id: str) -> TaskStatus:
    """Claim `task_id`, and complete it while a result waiter waits: its status then."""
    [delivery] = await claim(backend, clock)
    assert delivery.task_id == task_id

    async def complete_when_waited() -> None:
        await anyio.wait_all_tasks_blocked()
        await backend.complete([done(delivery, clock)], now=clock.time())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(complete_when_waited)
            record = await backend.storage.wait(task_id, timeout=None, now=clock.time())
    return record.status


async def test_a_closed_backend_opens_again_with_its_tasks(
    backend: Broker, clock: FakeClock
) -> None:
    task_id = await enqueue_one(backend, clock)
    await backend.close()
    assert not backend.is_open and not backend.storage.is_open

    await backend.open()
    assert backend.is_open and backend.storage.is_open
    record = await backend.storage.get(task_id, now=clock.time())
    assert record is not None and record.status is TaskStatus.QUEUED
    assert await _complete_and_wait(backend, clock, task_id) is TaskStatus.DONE


# On purpose: what the backend opened on the loop closed by hand can no longer be closed (closing
# needs that loop), so `abandon` drops it and the finalizers warn that it was not closed.
@pytest.mark.filterwarnings(
    "ignore:unclosed:ResourceWarning", "ignore:loop is closed:ResourceWarning"
)
async def test_a_backend_abandoned_with_its_event_loop_opens_on_another(
    backend: Broker, clock: FakeClock
) -> None:
    task_id = await enqueue_one(backend, clock)
    await backend.close()

    def use_on_a_loop_closed_by_hand() -> None:
        async def open_and_wait() -> asyncio.Future[object]:
            await backend.open()
            # A result waiter left pending: its future belongs to the loop that ends.
            waiting = asyncio.ensure_future(
                backend.storage.wait(task_id, timeout=None, now=clock.time())
            )
            await anyio.wait_all_tasks_blocked()
            return waiting

        loop = asyncio.new_event_loop()
        try:
            waiting = loop.run_until_complete(open_and_wait())
        finally:
            loop.close()  # no task is cancelled, no async generator finalised
        # What the garbage collector would do, done while nothing is freed yet: CPython 3.11's
        # collector can crash finalising such a coroutine inside a reference cycle.
        assert isinstance(waiting, asyncio.Task)
        waiting.get_coro().close()

    await anyio.to_thread.run_sync(use_on_a_loop_closed_by_hand)
    backend.abandon()
    assert not backend.is_open and not backend.storage.is_open
    backend.abandon()  # a no-op once closed
    gc.collect()  # the dropped connections' finalizers run here, under this test's filters

    await backend.open()
    assert await _complete_and_wait(backend, clock, task_id) is TaskStatus.DONE
