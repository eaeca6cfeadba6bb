"""`ctx.chunks`: every source kind and size, empty sources, resuming at the first chunk not
recorded (a retry and a release keep the position, as a re-claim after a crash does: that one is
in tests/backends/*/test_*_chunks_crash.py), progress "n of m", the failing chunk named in the
stored error, one-shot sources refused unless ``resume=False``, loop names, sync tasks, and a
stale run whose checkpoint write is refused stopping as one that lost its lease."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from taskflow import (
    GlobalConfig,
    LeaseLost,
    QueueTasks,
    Retry,
    TaskContext,
    TaskFailed,
    TaskStatus,
)
from taskflow.abc import EventKind
from taskflow.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> QueueTasks:
    config = GlobalConfig(lease_s=10, heartbeat_s=3, idle_poll_s=1000)
    return QueueTasks(name="t", clock=clock, config=config)


class Rows:
    """A re-iterable iterable without a length: each iteration starts over."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))


class AsyncRows:
    """A re-iterable async iterable: each iteration starts over."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __aiter__(self) -> AsyncIterator[int]:
        return self._rows()

    async def _rows(self) -> AsyncIterator[int]:
        for i in range(self.n):
            yield i


async def agen(stop: int, start: int = 0) -> AsyncIterator[int]:
    for i in range(start, stop):
        yield i


SOURCES: list[tuple[str, Any, list[Any], int | None]] = [
    # (id, source, expected chunks with size 3, total rows known up front)
    ("range", range(7), [range(0, 3), range(3, 6), range(6, 7)], 7),
    ("range-step", range(0, 14, 2), [range(0, 6, 2), range(6, 12, 2), range(12, 14, 2)], 7),
    ("pair", (10, 17), [range(10, 13), range(13, 16), range(16, 17)], 7),
    ("list", list("abcdefg"), [["a", "b", "c"], ["d", "e", "f"], ["g"]], 7),
    ("tuple", (1, 2, 3, 4), [[1, 2, 3], [4]], 4),
    ("iterable", Rows(7), [[0, 1, 2], [3, 4, 5], [6]], None),
    ("async-iterable", AsyncRows(7), [[0, 1, 2], [3, 4, 5], [6]], None),
]


@pytest.mark.parametrize(
    ("source", "expected", "total"), [s[1:] for s in SOURCES], ids=[s[0] for s in SOURCES]
)
async def test_every_source_kind_is_walked_in_chunks_with_progress(
    app: QueueTasks, source: Any, expected: list[Any], total: int | None
) -> None:
    seen: list[tuple[Any, int]] = []

    @app.task
    async def walk(ctx: TaskContext) -> int:
        chunks = ctx.chunks(source, size=3, message="loaded {done} of {total}")
        async for chunk in chunks:
            seen.append((chunk, chunks.done_rows))
        return chunks.done_rows

    with anyio.fail_after(10):
        async with app.running():
            handle = await walk.add_task()
            assert await handle.result(timeout=5) == 7 - (3 if len(expected) == 2 else 0)
            record = await handle.info()
    assert [chunk for chunk, _ in seen] == expected
    assert [done for _, done in seen] == [3 * i for i in range(len(expected))]
    rows = sum(len(c) for c in expected)
    assert record.progress is not None
    assert (record.progress.done, record.progress.total) == (rows, total)
    shown_total = "?" if total is None else total
    assert record.progress.message == f"loaded {rows} of {shown_total}"


@pytest.mark.parametrize("size", [1, 2, 5, 6, 100])
async def test_sizes(app: QueueTasks, size: int) -> None:
    @app.task
    async def walk(ctx: TaskContext) -> list[list[int]]:
        return [list(chunk) async for chunk in ctx.chunks(range(5), size=size)]

    with anyio.fail_after(10):
        async with app.running():
            chunks = await (await walk.add_task()).result(timeout=5)
    assert [row for chunk in chunks for row in chunk] == list(range(5))
    assert all(len(chunk) == size for chunk in chunks[:-1])
    assert 1 <= len(chunks[-1]) <= size


@pytest.mark.parametrize("source", [range(0), (5, 5), (9, 3), [], Rows(0), AsyncRows(0)], ids=repr)
async def test_an_empty_source_has_no_chunks_and_shows_zero_done(
    app: QueueTasks, source: Any
) -> None:
    @app.task
    async def walk(ctx: TaskContext) -> int:
        return len([chunk async for chunk in ctx.chunks(source, size=3)])

    with anyio.fail_after(10):
        async with app.running():
            handle = await walk.add_task()
            assert await handle.result(timeout=5) == 0
            record = await handle.info()
    assert record.progress is not None
    assert record.progress.done == 0


async def test_count_chunks_reports_chunks_of_the_total(app: QueueTasks) -> None:
    @app.task
    async def walk(ctx: TaskContext) -> None:
        async for _ in ctx.chunks(range(10), size=3, count="chunks", message="{done}/{total}"):
            pass

    with anyio.fail_after(10):
        async with app.running():
            handle = await walk.add_task()
            await handle.result(timeout=5)
            record = await handle.info()
    assert record.progress is not None
    assert (record.progress.done, record.progress.total, record.progress.message) == (4, 4, "4/4")


@pytest.mark.parametrize(
    "source",
    [range(10), (0, 10), list(range(10)), Rows(10), AsyncRows(10)],
    ids=["range", "pair", "list", "iterable", "async-iterable"],
)
async def test_a_retry_resumes_at_the_first_chunk_not_recorded(
    app: QueueTasks, source: Any
) -> None:
    """The first attempt fails in its third chunk; the second starts at that chunk, and its
    progress starts where the first left it, never at 0."""
    processed: list[tuple[int, list[int]]] = []
    resumed_at: list[int] = []

    @app.task(retries=1)
    async def walk(ctx: TaskContext) -> int:
        chunks = ctx.chunks(source, size=3, total=10)
        resumed_at.append(chunks.done_rows)
        async for chunk in chunks:
            processed.append((ctx.attempt, list(chunk)))
            if ctx.attempt == 1 and chunks.done_chunks == 2:
                raise Retry(delay=0)
        return chunks.done_rows

    with anyio.fail_after(10):
        async with app.running():
            handle = await walk.add_task()
            assert await handle.result(timeout=5) == 10
            events = await app.storage.read_events("default")
    assert processed == [
        (1, [0, 1, 2]),
        (1, [3, 4, 5]),
        (1, [6, 7, 8]),
        (2, [6, 7, 8]),
        (2, [9]),
    ]
    assert resumed_at == [0, 0]  # read before the first chunk: the position loads lazily
    second_run = [e for e in events if e.kind is EventKind.PROGRESS and e.attempt == 2]
    assert second_run
    assert all(int(e.detail.split("/")[0]) >= 6 for e in second_run if e.detail)
    assert second_run[-1].detail == "10/10"


async def test_a_released_task_resumes_too(clock: FakeClock) -> None:
    """A stop mid-loop releases the task; the next worker resumes at its chunk."""
    config = GlobalConfig(lease_s=10, heartbeat_s=3, idle_poll_s=1000, shutdown_grace_s=0)
    app = QueueTasks(name="t", clock=clock, config=config)
    started = anyio.Event()
    proceed = anyio.Event()
    processed: list[list[int]] = []

    @app.task
    async def walk(ctx: TaskContext) -> int:
        chunks = ctx.chunks(range(9), size=3)
        async for chunk in chunks:
            processed.append(list(chunk))
            if chunks.done_chunks == 1 and not proceed.is_set():
                started.set()
                await anyio.sleep_forever()
        return chunks.done_rows

    with anyio.fail_after(10):
        async with app.running() as starter:
            handle = await walk.add_task()
            await started.wait()
            starter.stop()
        proceed.set()
        async with app.running():
            assert await handle.result(timeout=5) == 9
    assert processed == [[0, 1, 2], [3, 4, 5], [3, 4, 5], [6, 7, 8]]


async def test_a_task_failing_in_a_chunk_says_which(app: QueueTasks) -> None:
    @app.task
    async def walk(ctx: TaskContext) -> None:
        async for chunk in ctx.chunks(range(100, 110), size=4, name="orders"):
            if 105 in chunk:
                raise ValueError("row 105 is bad")

    with anyio.fail_after(10):
        async with app.running():
            handle = await walk.add_task()
            with pytest.raises(TaskFailed) as caught:
                await handle.result(timeout=5)
    assert caught.value.error_type == "ValueError"
    assert "row 105 is bad [in chunk 2 of 3 of ctx.chunks 'orders' (rows 104..107)]" in str(
        caught.value
    )


async def test_an_error_after_the_loop_names_no_chunk(app: QueueTasks) -> None:
    @app.task
    async def walk(ctx: TaskContext) -> None:
        async for _ in ctx.chunks(["a", "b", "c"], size=2):
            pass
        raise ValueError("after the loop")

    with anyio.fail_after(10):
        async with app.running():
            with pytest.raises(TaskFailed) as caught:
                await (await walk.add_task()).result(timeout=5)
    assert "chunk" not in str(caught.value)


async def test_items_are_named_by_position_for_a_sequence(app: QueueTasks) -> None:
    @app.task
    async def walk(ctx: TaskContext) -> None:
        async for chunk in ctx.chunks(list("abcdefg"), size=3):
            if "e" in chunk:
                raise ValueError("bad item")

    with anyio.fail_after(10):
        async with app.running():
            with pytest.raises(TaskFailed) as caught:
                await (await walk.add_task()).result(timeout=5)
    assert "[in chunk 2 of 3 of ctx.chunks 'chunks' (items 3..5 of the source)]" in str(
        caught.value
    )


@pytest.mark.parametrize("one_shot", ["iterator", "generator", "async-generator"])
async def test_a_one_shot_source_is_refused_unless_resume_is_false(
    app: QueueTasks, one_shot: str
) -> None:
    def make() -> Any:
        if one_shot == "iterator":
            return iter([1, 2, 3, 4, 5])
        if one_shot == "generator":
            return (i for i in [1, 2, 3, 4, 5])
        return agen(6, start=1)

    @app.task
    async def walk(ctx: TaskContext, resume: bool) -> list[list[int]]:
        return [c async for c in ctx.chunks(make(), size=2, resume=resume)]

    with anyio.fail_after(10):
        async with app.running():
            refused = await walk.add_task(True)
            with pytest.raises(TaskFailed) as caught:
                await refused.result(timeout=5)
            walked = await walk.add_task(False)
            assert await walked.result(timeout=5) == [[1, 2], [3, 4], [5]]
            assert await app.storage.checkpoints(walked.task_id) == {}
    assert caught.value.error_type == "NotResumable"
    assert "resume=False" in str(caught.value)


async def test_resume_false_walks_from_the_start_on_every_run(app: QueueTasks) -> None:
    processed: list[list[int]] = []

    @app.task(retries=1)
    async def walk(ctx: TaskContext) -> None:
        async for chunk in ctx.chunks(agen(4), size=2, resume=False):
            processed.append(chunk)
            if ctx.attempt == 1 and chunk == [2, 3]:
                raise Retry(delay=0)

    with anyio.fail_after(10):
        async with app.running():
            await (await walk.add_task()).result(timeout=5)
    assert processed == [[0, 1], [2, 3], [0, 1], [2, 3]]


async def test_two_loops_need_names_of_their_own(app: QueueTasks) -> None:
    processed: list[tuple[str, int]] = []

    @app.task(retries=1)
    async def walk(ctx: TaskContext, same: bool) -> None:
        async for chunk in ctx.chunks(range(4), size=2, name="orders"):
            processed.append(("orders", chunk.start))
        async for chunk in ctx.chunks(range(4), size=2, name="orders" if same else "refunds"):
            processed.append(("refunds", chunk.start))
            if ctx.attempt == 1:
                raise Retry(delay=0)

    with anyio.fail_after(10):
        async with app.running():
            with pytest.raises(TaskFailed) as caught:
                await (await walk.options(retries=0).add_task(True)).result(timeout=5)
            assert "name=" in str(caught.value)
            processed.clear()
            await (await walk.add_task(False)).result(timeout=5)
    # The second attempt finds "orders" done and "refunds" at its first chunk.
    assert processed == [
        ("orders", 0),
        ("orders", 2),
        ("refunds", 0),
        ("refunds", 0),
        ("refunds", 2),
    ]


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
async def test_a_bad_size_is_refused(app: QueueTasks, size: Any) -> None:
    @app.task
    async def walk(ctx: TaskContext) -> None:
        async for _ in ctx.chunks(range(3), size=size):
            pass

    with anyio.fail_after(10):
        async with app.running():
            with pytest.raises(TaskFailed) as caught:
                await (await walk.add_task()).result(timeout=5)
    assert caught.value.error_type == "ValueError"
    assert "size" in str(caught.value)


async def test_a_sync_task_walks_chunks_with_for_and_resumes(app: QueueTasks) -> None:
    processed: list[tuple[int, list[int]]] = []
    threads: set[int] = set()

    @app.task(retries=1)
    def walk(ctx: TaskContext) -> int:
        chunks = ctx.chunks(range(7), size=3, message="loaded {done} of {total}")
        for chunk in chunks:
            threads.add(threading.get_ident())
            processed.append((ctx.attempt, list(chunk)))
            if ctx.attempt == 1 and chunks.done_chunks == 1:
                raise Retry(delay=0)
        return chunks.done_rows

    with anyio.fail_after(10):
        async with app.running():
            handle = await walk.add_task()
            assert await handle.result(timeout=5) == 7
            record = await handle.info()
    assert processed == [(1, [0, 1, 2]), (1, [3, 4, 5]), (2, [3, 4, 5]), (2, [6])]
    assert threading.get_ident() not in threads
    assert record.progress is not None
    assert record.progress.message == "loaded 7 of 7"


async def test_sync_and_async_iteration_are_told_apart(app: QueueTasks) -> None:
    @app.task
    async def plain_for(ctx: TaskContext) -> None:
        for _ in ctx.chunks(range(3), size=1):
            pass

    @app.task
    def sync_over_async(ctx: TaskContext) -> None:
        for _ in ctx.chunks(AsyncRows(3), size=1):
            pass

    with anyio.fail_after(10):
        async with app.running():
            for task in (plain_for, sync_over_async):
                with pytest.raises(TaskFailed) as caught:
                    await (await task.add_task()).result(timeout=5)
                assert caught.value.error_type == "TypeError"
                assert "async for" in str(caught.value)


async def test_a_stale_run_whose_checkpoint_is_refused_stops_as_a_lost_lease_does(
    app: QueueTasks, clock: FakeClock
) -> None:
    """Another claim takes the task over (its lease lapsed while this run was paused): the old
    run's next checkpoint is refused, and it stops there, storing nothing."""
    in_second_chunk = anyio.Event()
    go_on = anyio.Event()
    processed: list[int] = []
    stopped_by: list[BaseException] = []
    stopped = anyio.Event()

    @app.task(retries=3)
    async def walk(ctx: TaskContext) -> None:
        try:
            async for chunk in ctx.chunks(range(6), size=2):
                processed.append(chunk.start)
                if chunk.start == 2:
                    in_second_chunk.set()
                    await go_on.wait()
        except BaseException as exc:
            stopped_by.append(exc)
            stopped.set()
            raise

    with anyio.fail_after(10):
        async with app.running():
            handle = await walk.add_task()
            await in_second_chunk.wait()
            # Another worker claims it once the lease has lapsed (by its clock).
            [taken] = await app.broker.claim(
                ["default"], limit=1, lease_s=60, now=clock.time() + 11, worker_id="other"
            )
            go_on.set()
            await stopped.wait()
            record = await handle.info()
            kept = await app.storage.checkpoints(handle.task_id)
    assert processed == [0, 2]  # the chunk after the refused write never started
    assert len(stopped_by) == 1
    assert isinstance(stopped_by[0], (LeaseLost, anyio.get_cancelled_exc_class()))
    assert record.status is TaskStatus.RUNNING
    assert record.attempts == taken.attempt
    assert kept  # the first chunk's, written while the run still held the task


async def test_a_stale_sync_run_gets_lease_lost_in_its_thread(
    app: QueueTasks, clock: FakeClock
) -> None:
    in_second_chunk = threading.Event()
    go_on = threading.Event()
    processed: list[int] = []
    stopped_by: list[BaseException] = []
    stopped = anyio.Event()

    @app.task(retries=3)
    def walk(ctx: TaskContext) -> None:
        try:
            for chunk in ctx.chunks(range(6), size=2):
                processed.append(chunk.start)
                if chunk.start == 2:
                    in_second_chunk.set()
                    go_on.wait(10)
        except BaseException as exc:
            stopped_by.append(exc)
            raise
        finally:
            anyio.from_thread.run_sync(stopped.set)

    with anyio.fail_after(10):
        async with app.running():
            handle = await walk.add_task()
            await anyio.to_thread.run_sync(in_second_chunk.wait, 10)
            await app.broker.claim(
                ["default"], limit=1, lease_s=60, now=clock.time() + 11, worker_id="other"
            )
            go_on.set()
            await stopped.wait()
            record = await handle.info()
    assert processed == [0, 2]
    assert [type(exc) for exc in stopped_by] == [LeaseLost]
    assert "another run holds the task now" in str(stopped_by[0])
    assert record.status is TaskStatus.RUNNING
