"""Artifacts on the in-memory backend under a fake clock: what a put takes and refuses, listing,
fetching as a stream and into a file, delete-after-fetch decided once among concurrent fetchers,
expiry by a worker's housekeeping (the record says expired, when and why), a put that fails
half-way leaving nothing, and a fetch of what is gone raising `ArtifactNotFound`.

The bytes go to a `DirectoryArtifactStore` under the test's temporary directory, or, where a
worker's housekeeping runs on the fake clock, to a test-only store in memory (`BytesStore`);
what the same calls do on every backend with its own store is in
``tests/conformance/test_artifacts.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskflow import (
    ArtifactInfo,
    ArtifactNotFound,
    ArtifactState,
    AsyncResult,
    ConfigError,
    DirectoryArtifactStore,
    GlobalConfig,
    InvalidArtifactName,
    InvalidOption,
    QueueTasks,
    SyncResult,
    TaskContext,
)
from taskflow._artifact_records import BUCKET_S, encode_record
from taskflow._artifact_sweep import ArtifactSweep
from taskflow._artifacts import DEFAULT_RETENTION
from taskflow.abc import ArtifactBlob, ArtifactStore
from taskflow.testing import FakeClock

HOUR = 3600.0
INTERVAL_S = 60.0
BIG = bytes(range(256)) * 10_000  # 2.5 MB: three pieces of the stores' 1 MiB


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock, tmp_path: Path) -> QueueTasks:
    config = GlobalConfig(idle_poll_s=1000, cleanup_interval_s=INTERVAL_S)
    return QueueTasks(name="t", clock=clock, config=config, artifacts=tmp_path / "store")


class BytesStore(ArtifactStore):
    """A test-only store in memory, with no thread hops: `FakeClock.advance` then returns only
    once a housekeeping pass it woke has finished (a directory store deletes in a thread)."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], bytes] = {}

    async def _write(
        self, task_id: str, name: str, pieces: AsyncIterable[bytes], now: float
    ) -> ArtifactBlob:
        data = b"".join([piece async for piece in pieces])
        self.blobs[task_id, name] = data
        return ArtifactBlob(size=len(data), sha256=hashlib.sha256(data).hexdigest())

    async def _read(self, task_id: str, name: str) -> AsyncIterator[bytes]:
        if (task_id, name) not in self.blobs:
            raise ArtifactNotFound(task_id, name)
        yield self.blobs[task_id, name]

    async def _delete(self, task_id: str, name: str) -> bool:
        return self.blobs.pop((task_id, name), None) is not None

    async def _sweep_partial(self, older_than: float) -> int:
        return 0


@pytest.fixture
def bytes_app(clock: FakeClock) -> QueueTasks:
    """An app whose worker's housekeeping a `FakeClock.advance` sees through to its end."""
    config = GlobalConfig(idle_poll_s=1000, cleanup_interval_s=INTERVAL_S)
    return QueueTasks(name="t", clock=clock, config=config, artifacts=BytesStore())


def stored_blobs(app: QueueTasks) -> list[tuple[str, str]]:
    store = app.artifact_store
    assert isinstance(store, BytesStore)
    return sorted(store.blobs)


def stored_files(app: QueueTasks) -> list[Path]:
    """The artifact files the directory store holds (its partial writes aside)."""
    root = Path(str(getattr(app.artifact_store, "path")))  # noqa: B009 - the directory store's
    return sorted(p for p in root.rglob("*") if p.is_file() and ".partial" not in p.parts)


async def fetch(handle: AsyncResult[Any], name: str) -> bytes:
    return b"".join([piece async for piece in handle.fetch_artifact(name)])


async def run_task(app: QueueTasks, task: object, *args: object) -> AsyncResult[object]:
    handle: AsyncResult[object] = await task.add_task(*args)  # type: ignore[attr-defined]
    await handle.result(timeout=10)
    return handle


async def pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


# -- put ---------------------------------------------------------------------------------------


async def test_a_task_puts_bytes_a_file_and_iterators_and_the_producer_lists_and_fetches_them(
    app: QueueTasks, clock: FakeClock, tmp_path: Path
) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(BIG)

    def lines() -> Iterator[bytes]:
        yield b"a,b\n"
        yield b"1,2\n"

    @app.task
    async def export(ctx: TaskContext) -> list[ArtifactInfo]:
        return [
            await ctx.artifacts.put("raw.bin", b"hello"),
            await ctx.artifacts.put("big.bin", source),
            await ctx.artifacts.put("rows.csv", lines()),
            await ctx.artifacts.put("stream.txt", pieces(b"one ", b"two")),
        ]

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await export.add_task()
            await handle.result()
            listed = await handle.artifacts()
            assert [a.name for a in listed] == ["big.bin", "raw.bin", "rows.csv", "stream.txt"]
            big = listed[0]
            assert big.size == len(BIG)
            assert big.sha256 == hashlib.sha256(BIG).hexdigest()
            assert big.state is ArtifactState.READY
            assert big.ready_at == clock.time()
            assert big.expires_at == clock.time() + 72 * HOUR  # the default retention
            assert not big.delete_after_fetch
            assert await fetch(handle, "big.bin") == BIG
            assert await fetch(handle, "raw.bin") == b"hello"
            assert await fetch(handle, "rows.csv") == b"a,b\n1,2\n"
            assert await fetch(handle, "stream.txt") == b"one two"
            assert (await handle.artifact("raw.bin")).size == 5


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "is empty"),
        ("a/b.csv", "path separator"),
        ("..", "'..'"),
        ("x..y", "'..'"),
        ("a\x00b", "NUL"),
        ("x" * 201, "201 bytes"),
        (" padded", "white space"),
    ],
)
async def test_a_name_that_cannot_name_a_file_is_refused_and_nothing_is_stored(
    app: QueueTasks, name: str, says: str
) -> None:
    @app.task
    async def export(ctx: TaskContext) -> None:
        await ctx.artifacts.put(name, b"data")

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await export.add_task()
            with pytest.raises(Exception) as raised:
                await handle.result()
            assert getattr(raised.value, "error_type", None) == "InvalidArtifactName"
            assert says in str(raised.value)
            assert await handle.artifacts() == []
            with pytest.raises(InvalidArtifactName, match="plain file name"):
                await handle.artifact(name)
    assert stored_files(app) == []


async def test_text_is_refused_as_data_saying_how_to_pass_it(app: QueueTasks) -> None:
    @app.task
    async def export(ctx: TaskContext) -> None:
        await ctx.artifacts.put("a.txt", "some text")  # type: ignore[arg-type]

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await export.add_task()
            with pytest.raises(Exception, match=r"text\.encode\(\)"):
                await handle.result()


async def test_retention_options_are_checked_where_given(app: QueueTasks) -> None:
    with pytest.raises(InvalidOption, match="artifacts_keep must be seconds"):

        @app.task(artifacts_keep=-1)
        async def bad() -> None: ...

    @app.task
    async def export(ctx: TaskContext) -> None:
        await ctx.artifacts.put("a", b"x", keep="soon")  # type: ignore[arg-type]

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            with pytest.raises(Exception, match="keep must be seconds"):
                await (await export.add_task()).result()


# -- fetch -------------------------------------------------------------------------------------


async def test_fetch_into_a_file_writes_it_whole_under_its_name_only(
    app: QueueTasks, tmp_path: Path
) -> None:
    @app.task
    async def export(ctx: TaskContext) -> None:
        await ctx.artifacts.put("big.bin", pieces(BIG[:1000], BIG[1000:]))

    out = tmp_path / "out"
    out.mkdir()
    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await run_task(app, export)
            target = await handle.fetch_artifact_to("big.bin", out / "copy.bin")
    assert target == out / "copy.bin"
    assert target.read_bytes() == BIG
    assert sorted(p.name for p in out.iterdir()) == ["copy.bin"]  # no temporary file left


async def test_a_missing_artifact_raises_saying_so(app: QueueTasks) -> None:
    @app.task
    async def nothing() -> None: ...

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await run_task(app, nothing)
            with pytest.raises(ArtifactNotFound, match=r"has no artifact 'x\.csv'"):
                await fetch(handle, "x.csv")
            with pytest.raises(ArtifactNotFound):
                await handle.fetch_artifact_to("x.csv", "/nonexistent/never-written")


async def test_delete_after_fetch_deletes_once_when_concurrent_fetchers_finish(
    app: QueueTasks,
) -> None:
    @app.task(artifacts_delete_after_fetch=True)
    async def export(ctx: TaskContext) -> None:
        await ctx.artifacts.put("big.bin", BIG)

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await run_task(app, export)
            got = await app.artifact_keeper.get(handle.task_id, "big.bin")
            assert got is not None
            version = got[1]
            first, second = handle.fetch_artifact("big.bin"), handle.fetch_artifact("big.bin")
            # Both have begun reading before either finishes.
            head = [await anext(first), await anext(second)]
            rest_first = [piece async for piece in first]  # complete: this one deletes it
            rest_second = [piece async for piece in second]  # complete too, but decides nothing
            assert b"".join([head[0], *rest_first]) == BIG
            assert b"".join([head[1], *rest_second]) == BIG
            got = await app.artifact_keeper.get(handle.task_id, "big.bin")
            assert got is not None
            record, after = got
            assert record.state is ArtifactState.DELETED
            assert after == version + 1, "the record changed once: one fetcher decided"
            [info] = await handle.artifacts()
            assert info.state is ArtifactState.DELETED
            assert info.ended_why == "deleted after its first complete fetch"
            with pytest.raises(ArtifactNotFound, match=r"it was deleted at .*first complete fetch"):
                await fetch(handle, "big.bin")
    assert stored_files(app) == []


async def test_a_fetch_not_read_to_the_end_does_not_count(app: QueueTasks) -> None:
    @app.task(artifacts_delete_after_fetch=True)
    async def export(ctx: TaskContext) -> None:
        await ctx.artifacts.put("big.bin", BIG)

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await run_task(app, export)
            stream = handle.fetch_artifact("big.bin")
            await anext(stream)
            await stream.aclose()
            assert (await handle.artifact("big.bin")).state is ArtifactState.READY
            assert await fetch(handle, "big.bin") == BIG
            assert (await handle.artifact("big.bin")).state is ArtifactState.DELETED


# -- expiry by housekeeping --------------------------------------------------------------------


async def test_a_worker_expires_an_artifact_kept_for_a_duration_and_the_record_says_when(
    bytes_app: QueueTasks, clock: FakeClock
) -> None:
    app = bytes_app

    @app.task(artifacts_keep=timedelta(hours=72))
    async def export(ctx: TaskContext) -> None:
        await ctx.artifacts.put("sales.csv", b"1,2,3")

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await run_task(app, export)
            ready_at = clock.time()
            await clock.advance(71 * HOUR)
            assert await fetch(handle, "sales.csv") == b"1,2,3"
            assert len(stored_blobs(app)) == 1
            await clock.advance(HOUR + INTERVAL_S)  # past 72 h, and a housekeeping pass
            [info] = await handle.artifacts()
            assert info.state is ArtifactState.EXPIRED
            assert info.ended_at == ready_at + 72 * HOUR
            assert info.ended_why == "kept 72 h after it was ready"
            assert stored_blobs(app) == [], "the worker's housekeeping deleted the bytes"
            got = await app.artifact_keeper.get(handle.task_id, "sales.csv")
            assert got is not None and got[0].state is ArtifactState.EXPIRED
            with pytest.raises(ArtifactNotFound, match=r"it expired at .*kept 72 h"):
                await fetch(handle, "sales.csv")


async def test_an_artifact_past_its_time_reads_as_expired_before_any_housekeeping(
    clock: FakeClock, tmp_path: Path
) -> None:
    app = QueueTasks(name="t", clock=clock, artifacts=tmp_path)

    @app.task
    async def export(ctx: TaskContext) -> None:
        await ctx.artifacts.put("a.txt", b"x", keep=10)

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await run_task(app, export)
        await clock.advance(11)  # no worker runs now
        [info] = await handle.artifacts()
        assert info.state is ArtifactState.EXPIRED
        with pytest.raises(ArtifactNotFound, match="expired"):
            await fetch(handle, "a.txt")


@pytest.mark.parametrize("fetched", [True, False], ids=["fetched-first", "expired-first"])
async def test_keep_and_delete_after_fetch_whichever_comes_first(
    bytes_app: QueueTasks, clock: FakeClock, fetched: bool
) -> None:
    app = bytes_app

    @app.task
    async def export(ctx: TaskContext) -> None:
        await ctx.artifacts.put("a.txt", b"x", keep=HOUR, delete_after_fetch=True)

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await run_task(app, export)
            if fetched:
                assert await fetch(handle, "a.txt") == b"x"
            await clock.advance(HOUR + INTERVAL_S)
            [info] = await handle.artifacts()
            assert info.state is (ArtifactState.DELETED if fetched else ArtifactState.EXPIRED)
            assert stored_blobs(app) == []


async def test_ended_records_are_forgotten_a_result_ttl_later(clock: FakeClock) -> None:
    config = GlobalConfig(idle_poll_s=1000, cleanup_interval_s=INTERVAL_S, result_ttl_s=HOUR)
    app = QueueTasks(name="t", clock=clock, config=config, artifacts=BytesStore())

    @app.task
    async def export(ctx: TaskContext) -> None:
        await ctx.artifacts.put("a.txt", b"x", keep=60)

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await run_task(app, export)
            await clock.advance(60 + INTERVAL_S)
            assert [a.state for a in await handle.artifacts()] == [ArtifactState.EXPIRED]
            await clock.advance(HOUR - 1)
            assert len(await handle.artifacts()) == 1
            await clock.advance(INTERVAL_S)
            assert await handle.artifacts() == []


async def test_a_pass_reads_only_the_buckets_from_its_cursor_to_now(
    app: QueueTasks, clock: FakeClock
) -> None:
    @app.task
    async def export(ctx: TaskContext) -> None:
        for n in range(20):
            await ctx.artifacts.put(f"{n}.txt", b"x", keep=HOUR * (n + 1))

    sweep = ArtifactSweep(app.artifact_keeper, INTERVAL_S)
    with anyio.fail_after(10):
        async with app:
            async with app.running(concurrency=1):
                handle = await run_task(app, export)
            await clock.advance(30 * HOUR)
            first = await sweep.run_once()
            assert first.expired == 20
            assert first.buckets_read == 30 * HOUR / BUCKET_S + 1
            assert {a.state for a in await handle.artifacts()} == {ArtifactState.EXPIRED}
            await clock.advance(INTERVAL_S)
            second = await sweep.run_once()
            assert second.buckets_read <= 3, "the cursor moved past the emptied buckets"


# -- what fails leaves nothing -------------------------------------------------------------------


async def test_a_put_that_fails_half_way_leaves_nothing_and_keeps_the_earlier_artifact(
    app: QueueTasks,
) -> None:
    async def breaks() -> AsyncIterator[bytes]:
        yield BIG
        raise OSError("disk full")

    @app.task
    async def export(ctx: TaskContext, first: bool) -> None:
        if first:
            await ctx.artifacts.put("kept.txt", b"old")
        await ctx.artifacts.put("kept.txt" if not first else "new.bin", breaks())

    with anyio.fail_after(10):
        async with app.running(concurrency=1):
            handle = await export.add_task(True)
            with pytest.raises(Exception, match="disk full"):
                await handle.result()
            [kept] = await handle.artifacts()
            assert (kept.name, kept.size) == ("kept.txt", 3)
            replaced = await export.options(task_id=handle.task_id + "-2").add_task(False)
            with pytest.raises(Exception, match="disk full"):
                await replaced.result()
            assert await replaced.artifacts() == []
            with pytest.raises(ArtifactNotFound, match="put did not finish"):
                await fetch(replaced, "kept.txt")
            assert await fetch(handle, "kept.txt") == b"old"
    assert [p.name.split("~")[0] for p in stored_files(app)] == ["kept.txt"]


async def test_a_put_its_worker_never_finished_is_dropped_by_housekeeping(
    app: QueueTasks, clock: FakeClock
) -> None:
    started = anyio.Event()

    async def never_ends() -> AsyncIterator[bytes]:
        yield b"part"
        started.set()
        await anyio.sleep_forever()

    keeper = app.artifact_keeper
    sweep = ArtifactSweep(keeper, INTERVAL_S)
    with anyio.fail_after(10):
        async with app:
            # A put whose worker dies leaves its "writing" record; cancelling the put would
            # clean up after itself, so its record is written as a killed put leaves it.
            async with anyio.create_task_group() as tg:
                tg.start_soon(keeper.put, "t1", "a.bin", never_ends(), DEFAULT_RETENTION)
                await started.wait()
                got = await keeper.get("t1", "a.bin")
                assert got is not None and got[0].state is ArtifactState.WRITING
                tg.cancel_scope.cancel()
            assert got is not None
            await keeper.coordination.kv_set("artifacts:t1", "a.bin", encode_record(got[0]))
            assert await keeper.list("t1") == []
            with pytest.raises(ArtifactNotFound, match="still being written"):
                await keeper.info("t1", "a.bin")
            await clock.advance(6 * HOUR + 1)
            report = await sweep.run_once()
            assert report.abandoned == 1
            await clock.advance(INTERVAL_S)
            await sweep.run_once()
            assert await keeper.get("t1", "a.bin") is None


# -- sync code -----------------------------------------------------------------------------------


def test_a_sync_task_puts_with_put_sync_and_sync_code_fetches(
    clock: FakeClock, tmp_path: Path
) -> None:
    app = QueueTasks(name="t", clock=clock, artifacts=tmp_path / "store")

    @app.task
    def export(ctx: TaskContext) -> None:
        ctx.artifacts.put_sync("a.txt", b"from a thread")

    with app.run_in_thread(concurrency=1):
        handle = export.add_task_sync()
        handle.result(timeout=10)
        result: SyncResult[None] = SyncResult(handle.task_id, app)
        assert [a.name for a in result.artifacts()] == ["a.txt"]
        assert b"".join(result.fetch_artifact("a.txt")) == b"from a thread"
        target = result.fetch_artifact_to("a.txt", tmp_path / "a.txt")
        assert target.read_bytes() == b"from a thread"
        assert result.delete_artifact("a.txt") is True
        assert result.artifact("a.txt").state is ArtifactState.DELETED


# -- the app's store -----------------------------------------------------------------------------


def test_the_memory_backend_keeps_artifacts_in_a_directory_of_the_process() -> None:
    app = QueueTasks(name="t")
    assert isinstance(app.artifact_store, DirectoryArtifactStore)
    assert "taskflow-t-artifacts-" in str(app.artifact_store.path)


def test_artifacts_must_be_a_store_or_a_path() -> None:
    with pytest.raises(ConfigError, match="ArtifactStore or a directory path"):
        QueueTasks(name="t", artifacts=42)  # type: ignore[arg-type]


async def test_an_artifact_whose_bytes_cannot_be_deleted_does_not_stop_the_others(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Stuck(BytesStore):
        broken = True

        async def _delete(self, task_id: str, name: str) -> bool:
            if self.broken and name.startswith("stuck"):
                raise OSError("permission denied")
            return await super()._delete(task_id, name)

    store = Stuck()
    app = QueueTasks(name="t", clock=clock, artifacts=store)
    keeper = app.artifact_keeper
    sweep = ArtifactSweep(keeper, INTERVAL_S)
    one_hour = DEFAULT_RETENTION.overridden(HOUR, False)
    async with app:
        for name in ("a.txt", "stuck.txt", "b.txt"):
            await keeper.put("t1", name, b"x", one_hour)
        await clock.advance(HOUR)
        report = await sweep.run_once()
        assert "permission denied" in caplog.text
        assert report.expired == 2  # the others are wholly done
        assert [name.split("~")[0] for _, name in store.blobs] == ["stuck.txt"]
        assert (await keeper.info("t1", "stuck.txt")).state is ArtifactState.EXPIRED
        store.broken = False
        await clock.advance(INTERVAL_S)
        await sweep.run_once()
        assert store.blobs == {}, "the next pass deleted the bytes left behind"
