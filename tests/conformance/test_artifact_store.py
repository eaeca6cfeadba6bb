"""Conformance of every `ArtifactStore`: the rules in ``taskflow/abc/_artifacts.py``.

Each test runs on every store in `STORES`: the directory store, and the store each server
backend offers (`Broker.default_artifact_store`) on its conformance fixture. A new store joins
with one line there.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from taskflow import ArtifactNotFound, DirectoryArtifactStore
from taskflow.abc import ArtifactBlob, ArtifactStore

from .conftest import BACKEND_KINDS

MiB = 1 << 20

StoreOpener = Callable[[pytest.FixtureRequest, Path], AsyncContextManager[ArtifactStore]]


@asynccontextmanager
async def directory_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ArtifactStore]:
    async with DirectoryArtifactStore(tmp_path / "artifacts") as store:
        yield store


def backend_store(kind: str) -> StoreOpener:
    """The store a backend's broker offers, on that backend's conformance fixture."""

    @asynccontextmanager
    async def open_store(
        request: pytest.FixtureRequest, tmp_path: Path
    ) -> AsyncIterator[ArtifactStore]:
        async with request.getfixturevalue(f"backend_factory_{kind}")() as broker:
            store = broker.default_artifact_store()
            assert store is not None, f"the {kind} broker offers no artifact store"
            async with store:
                yield store

    return open_store


#: Every store under test, by id.
STORES: dict[str, StoreOpener] = {
    "directory": directory_store,
    **{
        kind: backend_store(kind)
        for kind in ("redis", "redis_cluster", "postgres")
        if kind in BACKEND_KINDS
    },
}


@pytest.fixture(params=list(STORES), ids=list(STORES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ArtifactStore]:
    async with STORES[request.param](request, tmp_path) as opened:
        yield opened


# -- helpers ------------------------------------------------------------------------------------


async def stream(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def gated(
    first: list[bytes], started: asyncio.Event, go: asyncio.Event
) -> AsyncIterator[bytes]:
    """Yield `first`, set `started`, and wait for `go` (forever, unless set)."""
    for piece in first:
        yield piece
    started.set()
    await go.wait()


async def read_all(store: ArtifactStore, task_id: str, name: str) -> bytes:
    return b"".join([piece async for piece in store.read(task_id, name)])


def blob_of(data: bytes) -> ArtifactBlob:
    return ArtifactBlob(size=len(data), sha256=hashlib.sha256(data).hexdigest())


def sample(size: int, seed: int = 0) -> bytes:
    """`size` bytes that differ from piece to piece (so a misplaced piece shows)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += counter.to_bytes(4, "big") + block
        counter += 1
    return bytes(out[:size])


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param([], id="empty"),
        pytest.param([b""], id="empty-piece"),
        pytest.param([b"hello"], id="small"),
        pytest.param([b"a", b"", b"bc"], id="small-pieces"),
    ],
)
async def test_small_round_trip(store: ArtifactStore, pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    blob = await store.write("t1", "out.csv", stream(*pieces), now=1.0)
    assert blob == blob_of(data)
    assert await read_all(store, "t1", "out.csv") == data


async def test_multi_piece_round_trip_is_streamed(store: ArtifactStore) -> None:
    data = sample(3 * MiB + 12345)
    # Pieces of odd sizes, one larger than a store's piece and many smaller.
    cuts = [0, 7, 70_000, 70_001, MiB + 3, 2 * MiB + 900_000, len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(cuts)]
    blob = await store.write("t1", "big.bin", stream(*pieces), now=1.0)
    assert blob == blob_of(data)
    read = [piece async for piece in store.read("t1", "big.bin")]
    assert len(read) >= 3, "the reader got the artifact whole, not in pieces"
    assert max(len(piece) for piece in read) <= 2 * MiB
    assert b"".join(read) == data


async def test_pieces_may_be_bytearray_or_memoryview(store: ArtifactStore) -> None:
    blob = await store.write("t1", "a", stream(bytearray(b"ab"), memoryview(b"cd")), now=1.0)
    assert blob == blob_of(b"abcd")
    assert await read_all(store, "t1", "a") == b"abcd"


async def test_keys_stay_apart(store: ArtifactStore) -> None:
    await store.write("t1", "report.csv", stream(b"one"), now=1.0)
    await store.write("t2", "report.csv", stream(b"two"), now=1.0)
    await store.write("t1", "other.csv", stream(b"three"), now=1.0)
    assert await read_all(store, "t1", "report.csv") == b"one"
    assert await read_all(store, "t2", "report.csv") == b"two"
    assert await read_all(store, "t1", "other.csv") == b"three"
    assert await store.delete("t1", "report.csv") is True
    assert await read_all(store, "t2", "report.csv") == b"two"
    assert await read_all(store, "t1", "other.csv") == b"three"


async def test_names_with_odd_characters(store: ArtifactStore) -> None:
    for name in ("{tag}", "a b.csv", "x:y", "ünï.txt", ".hidden"):
        await store.write("t1", name, stream(name.encode()), now=1.0)
    for name in ("{tag}", "a b.csv", "x:y", "ünï.txt", ".hidden"):
        assert await read_all(store, "t1", name) == name.encode()


# -- missing and delete ---------------------------------------------------------------------------


async def test_missing_artifact_raises_on_first_iteration(store: ArtifactStore) -> None:
    reader = store.read("nobody", "nothing.csv")  # no error yet: reads are lazy
    with pytest.raises(ArtifactNotFound) as caught:
        await reader.__anext__()
    assert caught.value.task_id == "nobody" and caught.value.name == "nothing.csv"


async def test_delete(store: ArtifactStore) -> None:
    await store.write("t1", "a", stream(sample(MiB + 1)), now=1.0)
    assert await store.delete("t1", "a") is True
    assert await store.delete("t1", "a") is False
    assert await store.delete("t9", "never") is False
    with pytest.raises(ArtifactNotFound):
        await read_all(store, "t1", "a")
    # A deleted key can be written again.
    await store.write("t1", "a", stream(b"again"), now=2.0)
    assert await read_all(store, "t1", "a") == b"again"


# -- atomicity ------------------------------------------------------------------------------------


async def test_replace_is_atomic_for_a_reader_in_progress(store: ArtifactStore) -> None:
    old, new = sample(3 * MiB, seed=1), sample(2 * MiB + 5, seed=2)
    await store.write("t1", "a", stream(old), now=1.0)
    reader = store.read("t1", "a")
    first = await reader.__anext__()
    assert await store.write("t1", "a", stream(new), now=2.0) == blob_of(new)
    rest = [piece async for piece in reader]
    assert b"".join([first, *rest]) in (old, new)
    assert await read_all(store, "t1", "a") == new


async def test_a_replace_is_invisible_until_whole(store: ArtifactStore) -> None:
    old = b"old version"
    await store.write("t1", "a", stream(old), now=1.0)
    started, go = asyncio.Event(), asyncio.Event()
    writing = asyncio.create_task(
        store.write("t1", "a", gated([sample(2 * MiB + 7)], started, go), now=2.0)
    )
    await started.wait()
    assert await read_all(store, "t1", "a") == old
    go.set()
    blob = await writing
    assert blob.size == 2 * MiB + 7
    assert await read_all(store, "t1", "a") == sample(2 * MiB + 7)


async def test_a_failing_write_leaves_nothing(store: ArtifactStore) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield sample(MiB + 10)
        yield b"more"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await store.write("t1", "a", failing(), now=1.0)
    with pytest.raises(ArtifactNotFound):
        await read_all(store, "t1", "a")
    # Over an earlier version, the earlier one stays.
    await store.write("t1", "a", stream(b"kept"), now=2.0)
    with pytest.raises(OSError, match="disk full"):
        await store.write("t1", "a", failing(), now=3.0)
    assert await read_all(store, "t1", "a") == b"kept"
    await store.sweep_partial(older_than=10.0)
    assert await store.sweep_partial(older_than=10.0) == 0
    assert await read_all(store, "t1", "a") == b"kept"


async def test_a_cancelled_write_leaves_nothing(store: ArtifactStore) -> None:
    started = asyncio.Event()
    writing = asyncio.create_task(
        store.write("t1", "a", gated([sample(2 * MiB + 1)], started, asyncio.Event()), now=1.0)
    )
    await started.wait()
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    with pytest.raises(ArtifactNotFound):
        await read_all(store, "t1", "a")
    await store.sweep_partial(older_than=10.0)
    assert await store.sweep_partial(older_than=10.0) == 0
    with pytest.raises(ArtifactNotFound):
        await read_all(store, "t1", "a")


async def test_sweep_spares_newer_writes_and_removes_older_ones(store: ArtifactStore) -> None:
    await store.write("t1", "done", stream(b"finished"), now=1.0)
    started, go = asyncio.Event(), asyncio.Event()
    writing = asyncio.create_task(
        store.write("t1", "a", gated([sample(MiB + 1)], started, go), now=100.0)
    )
    await started.wait()
    # A write that started at or after the cutoff is in progress: left alone.
    assert await store.sweep_partial(older_than=100.0) == 0
    go.set()
    assert (await writing).size == MiB + 1
    assert await read_all(store, "t1", "a") == sample(MiB + 1)

    # One that started before it is abandoned: removed. Should its writer come back, the
    # write fails rather than publish what is left.
    started, go = asyncio.Event(), asyncio.Event()
    writing = asyncio.create_task(
        store.write("t1", "b", gated([sample(MiB + 1)], started, go), now=200.0)
    )
    await started.wait()
    assert await store.sweep_partial(older_than=201.0) == 1
    go.set()
    with pytest.raises(Exception):  # noqa: B017 - each store says it its own way
        await writing
    with pytest.raises(ArtifactNotFound):
        await read_all(store, "t1", "b")
    # Finished artifacts are never swept.
    assert await store.sweep_partial(older_than=1e12) == 0
    assert await read_all(store, "t1", "done") == b"finished"
    assert await read_all(store, "t1", "a") == sample(MiB + 1)


async def test_concurrent_writes_of_one_key_leave_one_whole(store: ArtifactStore) -> None:
    versions = [sample(MiB + 100 * i, seed=i) for i in range(4)]
    blobs = await asyncio.gather(
        *(store.write("t1", "a", stream(data), now=1.0) for data in versions)
    )
    assert blobs == [blob_of(data) for data in versions]
    assert await read_all(store, "t1", "a") in versions
    assert await store.sweep_partial(older_than=1e12) == 0
    assert await store.delete("t1", "a") is True
    with pytest.raises(ArtifactNotFound):
        await read_all(store, "t1", "a")
