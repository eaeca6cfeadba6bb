"""`DirectoryArtifactStore` beyond the conformance suite: it refuses keys that would leave its
directory, and keeps its writes in progress where `sweep_partial` finds them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskflow import DirectoryArtifactStore


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.parametrize(
    ("task_id", "name"),
    [
        ("t1", ".."),
        ("t1", "."),
        ("t1", "a/b"),
        ("t1", "../../etc/passwd"),
        ("t1", "nul\0"),
        ("t1", ""),
        ("..", "a"),
        ("a/b", "a"),
        ("", "a"),
        (".partial", "a"),
    ],
)
async def test_keys_that_would_leave_the_directory_are_refused(
    tmp_path: Path, task_id: str, name: str
) -> None:
    async with DirectoryArtifactStore(tmp_path / "root") as store:
        with pytest.raises(ValueError, match=r"artifact|task id"):
            await store.write(task_id, name, one(b"x"), now=1.0)
        with pytest.raises(ValueError):
            await store.delete(task_id, name)
        with pytest.raises(ValueError):
            await store.read(task_id, name).__anext__()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert [p.name for p in (tmp_path / "root").iterdir()] == [".partial"]


async def test_layout_and_partial_names(tmp_path: Path) -> None:
    async with DirectoryArtifactStore(tmp_path) as store:
        await store.write("t1", "out.csv", one(b"rows"), now=1.5)
        assert (tmp_path / "t1" / "out.csv").read_bytes() == b"rows"
        # A write in progress that another host left: found by its name's start time.
        (tmp_path / ".partial" / "1000-abc.part").write_bytes(b"half")
        (tmp_path / ".partial" / "5000-def.part").write_bytes(b"half")
        assert await store.sweep_partial(older_than=2.0) == 1
        assert [p.name for p in (tmp_path / ".partial").iterdir()] == ["5000-def.part"]
        assert await store.delete("t1", "out.csv") is True
        assert not (tmp_path / "t1").exists()  # the emptied task directory goes too
