"""The shared asyncio helpers: `first_of` and `BackgroundTasks` (taskflow._aio)."""

from __future__ import annotations

import asyncio
import gc
import warnings

import anyio
import pytest

from taskflow._aio import BackgroundTasks, first_of


async def test_first_of_returns_when_the_first_ends_and_cancels_the_others() -> None:
    cancelled = asyncio.Event()
    ended = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def soon() -> None:
        await ended.wait()

    with anyio.fail_after(5):
        waiting = asyncio.ensure_future(first_of(forever(), soon()))
        await anyio.wait_all_tasks_blocked()
        assert not waiting.done()
        ended.set()
        await waiting
        await cancelled.wait()


async def test_first_of_raises_what_the_first_raised() -> None:
    async def broken() -> None:
        raise ValueError("no")

    with anyio.fail_after(5), pytest.raises(ValueError, match="no"):
        await first_of(broken(), asyncio.Event().wait())


async def test_first_of_cancelled_cancels_its_waiters() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    with anyio.fail_after(5):
        waiting = asyncio.ensure_future(first_of(forever()))
        await anyio.wait_all_tasks_blocked()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await cancelled.wait()


async def test_first_of_leaves_no_coroutine_unawaited() -> None:
    async def nothing() -> None:
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Both may never start: the first is done before the loop runs the second's task.
        await first_of(nothing(), nothing())
        await asyncio.sleep(0)
        gc.collect()


async def test_background_tasks_keeps_each_task_until_it_ends() -> None:
    background = BackgroundTasks()
    release = asyncio.Event()

    async def job() -> int:
        await release.wait()
        return 7

    task = background.spawn(job(), name="job")
    assert len(background) == 1 and task.get_name() == "job"
    release.set()
    assert await task == 7
    await asyncio.sleep(0)  # the done callback runs one turn later
    assert len(background) == 0


async def test_background_tasks_cancel_all() -> None:
    background = BackgroundTasks()
    tasks = [background.spawn(asyncio.Event().wait()) for _ in range(3)]
    await anyio.wait_all_tasks_blocked()
    background.cancel_all()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert len(background) == 0
