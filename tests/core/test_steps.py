"""``ctx.step``: both forms (callable, block), a retry and a release resuming at the first step
not recorded, recorded values returned decoded on every run, a step that raised redone, the
failing step named in the stored error, names, sync tasks (``with``), steps around a chunk loop,
and a stale run whose step record is refused stopping as one that lost its lease. The re-claim
after a SIGKILL is in tests/backends/test_steps_crash.py."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from taskflow import GlobalConfig, LeaseLost, QueueTasks, Retry, TaskContext, TaskFailed, TaskStatus
from taskflow.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> QueueTasks:
    config = GlobalConfig(lease_s=10, heartbeat_s=3, idle_poll_s=1000)
    return QueueTasks(name="t", clock=clock, config=config)


async def test_a_retry_skips_the_steps_recorded_and_gets_their_values(app: QueueTasks) -> None:
    calls: list[tuple[int, str]] = []

    @app.task(retries=1)
    async def report(ctx: TaskContext, day: str) -> list[Any]:
        def download(day: str) -> tuple[str, int]:
            calls.append((ctx.attempt, "download"))
            return (day, 3)

        rows = await ctx.step("download", download, day)

        async def aggregate(rows: list[Any]) -> int:
            calls.append((ctx.attempt, "aggregate"))
            return int(rows[1]) * 10

        total = await ctx.step("aggregate", aggregate, rows)
        calls.append((ctx.attempt, "render"))
        if ctx.attempt == 1:
            raise Retry(delay=0)
        return [rows, total]

    with anyio.fail_after(10):
        async with app.running():
            handle = await report.add_task("2026-12-05")
            # The tuple is recorded and comes back a list, on the first run as on the re-run.
            assert await handle.result(timeout=5) == [["2026-12-05", 3], 30]
    assert calls == [(1, "download"), (1, "aggregate"), (1, "render"), (2, "render")]


async def test_the_first_run_gets_the_recorded_value_too(app: QueueTasks) -> None:
    seen: list[Any] = []

    @app.task
    async def job(ctx: TaskContext) -> None:
        seen.append(await ctx.step("pair", lambda: (1, 2)))
        async with ctx.step("block") as step:
            step.value = {"a": (3,)}
        seen.append(step.value)

    with anyio.fail_after(10):
        async with app.running():
            await (await job.add_task()).result(timeout=5)
    assert seen == [[1, 2], {"a": [3]}]


async def test_the_block_form_runs_its_guarded_work_once(app: QueueTasks) -> None:
    work: list[tuple[int, str]] = []
    entered: list[tuple[int, bool]] = []

    @app.task(retries=1, retry_backoff=0)
    async def job(ctx: TaskContext) -> str:
        async with ctx.step("download") as step:
            entered.append((ctx.attempt, step.done))
            if not step.done:
                work.append((ctx.attempt, "download"))
                step.value = "rows.csv"
        assert step.done
        async with ctx.step("upload") as up:
            if not up.done:
                work.append((ctx.attempt, "upload"))
                if ctx.attempt == 1:
                    raise ConnectionError("upload failed half way")
        return str(step.value)

    with anyio.fail_after(10):
        async with app.running():
            assert await (await job.add_task()).result(timeout=5) == "rows.csv"
    assert entered == [(1, False), (2, True)]
    # The step that raised is not recorded: the re-run does it again.
    assert work == [(1, "download"), (1, "upload"), (2, "upload")]


async def test_a_value_set_on_a_done_step_is_ignored_with_a_warning(
    app: QueueTasks, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(retries=1)
    async def job(ctx: TaskContext) -> Any:
        async with ctx.step("s") as step:
            step.value = ctx.attempt  # no `if not step.done:` guard
        if ctx.attempt == 1:
            raise Retry(delay=0)
        return step.value

    with anyio.fail_after(10):
        async with app.running():
            assert await (await job.add_task()).result(timeout=5) == 1
    assert "Guard the block's work with `if not step.done:`" in caplog.text


async def test_a_release_resumes_at_the_step_it_stopped_in(clock: FakeClock) -> None:
    config = GlobalConfig(lease_s=10, heartbeat_s=3, idle_poll_s=1000, shutdown_grace_s=0)
    app = QueueTasks(name="t", clock=clock, config=config)
    started = anyio.Event()
    proceed = anyio.Event()
    ran: list[str] = []

    async def part(name: str) -> str:
        ran.append(name)
        if name == "b" and not proceed.is_set():
            started.set()
            await anyio.sleep_forever()
        return name.upper()

    @app.task
    async def job(ctx: TaskContext) -> list[str]:
        return [await ctx.step(name, part, name) for name in ("a", "b", "c")]

    with anyio.fail_after(10):
        async with app.running() as starter:
            handle = await job.add_task()
            await started.wait()
            starter.stop()
        proceed.set()
        async with app.running():
            assert await handle.result(timeout=5) == ["A", "B", "C"]
    assert ran == ["a", "b", "b", "c"]


async def test_a_task_failing_in_a_step_says_which(app: QueueTasks) -> None:
    @app.task
    async def job(ctx: TaskContext) -> None:
        await ctx.step("ok", lambda: 1)
        async with ctx.step("parse"):
            raise ValueError("row 7 is bad")

    with anyio.fail_after(10):
        async with app.running():
            with pytest.raises(TaskFailed) as caught:
                await (await job.add_task()).result(timeout=5)
    assert caught.value.error_type == "ValueError"
    assert "row 7 is bad [in step 'parse']" in str(caught.value)


async def test_an_error_after_the_steps_names_none(app: QueueTasks) -> None:
    @app.task
    async def job(ctx: TaskContext) -> None:
        await ctx.step("ok", lambda: 1)
        raise ValueError("after")

    with anyio.fail_after(10):
        async with app.running():
            with pytest.raises(TaskFailed) as caught:
                await (await job.add_task()).result(timeout=5)
    assert "step" not in str(caught.value)


@pytest.mark.parametrize(
    ("use", "error", "words"),
    [
        ("twice", "ValueError", "ctx.step name 'x' is used twice"),
        ("empty", "ValueError", "non-empty str"),
        ("not-callable", "TypeError", "takes a function to call"),
        ("unencodable", "UnencodableResult", "msgspec cannot encode"),
        ("with-in-async", "TypeError", "`async with`, not `with`"),
    ],
)
async def test_misuse_is_refused_with_a_clear_error(
    app: QueueTasks, use: str, error: str, words: str
) -> None:
    @app.task
    async def job(ctx: TaskContext, use: str) -> None:
        if use == "twice":
            await ctx.step("x", lambda: 1)
            await ctx.step("x", lambda: 2)
        elif use == "empty":
            ctx.step("")
        elif use == "not-callable":
            await ctx.step("x", 3)  # type: ignore[call-overload]
        elif use == "unencodable":
            await ctx.step("x", object)
        else:
            with ctx.step("x"):
                pass

    with anyio.fail_after(10):
        async with app.running():
            with pytest.raises(TaskFailed) as caught:
                await (await job.add_task(use)).result(timeout=5)
    assert caught.value.error_type == error
    assert words in str(caught.value)


async def test_a_sync_task_uses_with_and_resumes(app: QueueTasks) -> None:
    work: list[tuple[int, str]] = []
    threads: set[int] = set()

    @app.task(retries=1)
    def job(ctx: TaskContext) -> list[Any]:
        threads.add(threading.get_ident())
        values = []
        for name in ("a", "b"):
            with ctx.step(name) as step:
                if not step.done:
                    work.append((ctx.attempt, name))
                    step.value = name * 2
                    if name == "b" and ctx.attempt == 1:
                        raise Retry(delay=0)
            values.append(step.value)
        return values

    with anyio.fail_after(10):
        async with app.running():
            assert await (await job.add_task()).result(timeout=5) == ["aa", "bb"]
    assert work == [(1, "a"), (1, "b"), (2, "b")]
    assert threading.get_ident() not in threads


async def test_the_callable_form_is_refused_in_a_sync_task(app: QueueTasks) -> None:
    @app.task
    def job(ctx: TaskContext) -> None:
        ctx.step("x", len, "abc")

    with anyio.fail_after(10):
        async with app.running():
            with pytest.raises(TaskFailed) as caught:
                await (await job.add_task()).result(timeout=5)
    assert caught.value.error_type == "TypeError"
    assert "in a sync task write `with ctx.step('x') as step:`" in str(caught.value)


async def test_a_chunk_loop_inside_a_step_resumes_and_is_skipped_once_done(
    app: QueueTasks,
) -> None:
    """A chunk is recorded like a step: a re-run resumes the loop at its first chunk not done;
    once the step around the loop is done, a re-run skips the whole loop."""
    processed: list[tuple[int, int]] = []

    @app.task(retries=2)
    async def job(ctx: TaskContext) -> int:
        async with ctx.step("load") as step:
            if not step.done:
                chunks = ctx.chunks(range(6), size=2)
                async for chunk in chunks:
                    processed.append((ctx.attempt, chunk.start))
                    if ctx.attempt == 1 and chunk.start == 2:
                        raise Retry(delay=0)
                step.value = chunks.done_rows
        if ctx.attempt == 2:
            raise Retry(delay=0)
        return int(step.value)

    with anyio.fail_after(10):
        async with app.running():
            assert await (await job.add_task()).result(timeout=5) == 6
    assert processed == [(1, 0), (1, 2), (2, 2), (2, 4)]


async def test_a_stale_run_whose_step_record_is_refused_stops_as_a_lost_lease_does(
    app: QueueTasks, clock: FakeClock
) -> None:
    in_step = anyio.Event()
    go_on = anyio.Event()
    stopped_by: list[BaseException] = []
    stopped = anyio.Event()
    after: list[str] = []

    @app.task(retries=3)
    async def job(ctx: TaskContext) -> None:
        try:
            async with ctx.step("slow"):
                in_step.set()
                await go_on.wait()
            after.append("ran on")
        except BaseException as exc:
            stopped_by.append(exc)
            stopped.set()
            raise

    with anyio.fail_after(10):
        async with app.running():
            handle = await job.add_task()
            await in_step.wait()
            [taken] = await app.broker.claim(
                ["default"], limit=1, lease_s=60, now=clock.time() + 11, worker_id="other"
            )
            go_on.set()
            await stopped.wait()
            record = await handle.info()
            kept = await app.storage.checkpoints(handle.task_id)
    assert after == []
    assert len(stopped_by) == 1
    assert isinstance(stopped_by[0], (LeaseLost, anyio.get_cancelled_exc_class()))
    assert kept == {}
    assert record.status is TaskStatus.RUNNING
    assert record.attempts == taken.attempt
