"""`DirectoryArtifactStore`: artifact bytes as files under one directory.

Layout: ``<root>/<task_id>/<name>`` holds an artifact; ``<root>/.partial/`` holds the writes in
progress, each a file named ``<start ms>-<random>.part`` (the start is the ``now`` the write was
given, so `sweep_partial` tells an abandoned write from a live one by its name alone, whichever
host started it). A write streams to its partial file, fsyncs it, and renames it over the
artifact with ``os.replace``: the rename is atomic on one file system, so a reader sees the old
file or the new one, whole, and a reader that opened the old one keeps reading it. Nothing that
matters lives in the process, so every host that mounts the directory shares the store.

All file I/O runs in worker threads (``anyio.to_thread``), one piece (`PIECE_SIZE`) at a time.

What does not live here: the contract and its rules (``abc/_artifacts.py``), cutting and hashing
the stream (``_artifact_pieces.py``), and the artifacts' metadata (kept by the core in the
backend's key-value space).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO, Final, TypeVar

import anyio
import anyio.to_thread

from ._artifact_pieces import PIECE_SIZE, Tally, fixed_pieces
from ._exceptions import ArtifactNotFound
from .abc import ArtifactBlob, ArtifactStore

__all__ = ["DirectoryArtifactStore"]

T = TypeVar("T")

#: The directory, under the root, of the writes in progress.
_PARTIAL: Final = ".partial"
_SUFFIX: Final = ".part"


async def _off_loop(func: Callable[..., T], *args: object) -> T:
    """Run blocking file I/O in a worker thread. Not cancellable while it runs (anyio's
    default), so a cancelled write never closes a file that a thread is still writing."""
    return await anyio.to_thread.run_sync(func, *args)


class DirectoryArtifactStore(ArtifactStore):
    """Artifacts as files: ``<path>/<task_id>/<name>``, written whole or not at all.

    Works for a directory on one host (the embedded backend's default) and for one every host
    mounts (NFS, a shared volume): the partial files and their start times are in the
    directory, not in the process.

    Args:
        path: The root directory (created on `open` if it does not exist).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        """The root directory."""

    async def _open(self) -> None:
        await _off_loop(self._make_dirs)

    def _make_dirs(self) -> None:
        (self.path / _PARTIAL).mkdir(parents=True, exist_ok=True)
        self._real_root = self.path.resolve()

    # -- paths ---------------------------------------------------------------------------------

    def _artifact_path(self, task_id: str, name: str) -> Path:
        """Where ``(task_id, name)`` lives, after checking it stays inside the root.

        Raises:
            ValueError: either part would leave its directory, or the task id starts with a
                dot (the store's own files are dot-named).
        """
        for what, part in (("task id", task_id), ("artifact name", name)):
            if not part or part in (".", "..") or "/" in part or "\0" in part or os.sep in part:
                raise ValueError(
                    f"{what} {part!r} cannot name a file inside the artifact directory: use a "
                    "name without '/', NUL, and other than '.' or '..'"
                )
        if task_id.startswith("."):
            raise ValueError(
                f"task id {task_id!r} starts with a dot, which the directory artifact store keeps "
                "for its own files: choose a task id without a leading dot"
            )
        path = self._real_root / task_id / name
        if path.parent.parent != self._real_root:
            raise ValueError(f"artifact {name!r} of task {task_id!r} would leave {self.path}")
        return path

    def _partial_path(self, now: float) -> Path:
        return self._real_root / _PARTIAL / f"{int(now * 1000)}-{secrets.token_hex(8)}{_SUFFIX}"

    # -- write ---------------------------------------------------------------------------------

    async def _write(
        self, task_id: str, name: str, pieces: AsyncIterable[bytes], now: float
    ) -> ArtifactBlob:
        target = self._artifact_path(task_id, name)
        partial = self._partial_path(now)
        file = await _off_loop(partial.open, "xb")
        try:
            tally = Tally()
            async for piece in fixed_pieces(pieces):
                await _off_loop(_write_piece, file, piece, tally)
            await _off_loop(_finish, file)
            await _off_loop(_publish, partial, target)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _off_loop(_discard, file, partial)
            raise
        return tally.blob()

    # -- read ----------------------------------------------------------------------------------

    async def _read(self, task_id: str, name: str) -> AsyncIterator[bytes]:
        path = self._artifact_path(task_id, name)
        try:
            file = await _off_loop(_open_to_read, path)
        except (FileNotFoundError, NotADirectoryError):
            raise ArtifactNotFound(task_id, name) from None
        try:
            while piece := await _off_loop(file.read, PIECE_SIZE):
                yield piece
        finally:
            with anyio.CancelScope(shield=True):
                await _off_loop(file.close)

    # -- delete and sweep ----------------------------------------------------------------------

    async def _delete(self, task_id: str, name: str) -> bool:
        return await _off_loop(_remove, self._artifact_path(task_id, name))

    async def _sweep_partial(self, older_than: float) -> int:
        return await _off_loop(_sweep, self._real_root / _PARTIAL, int(older_than * 1000))


# -- the blocking steps, run in worker threads --------------------------------------------------


def _open_to_read(path: Path) -> BinaryIO:
    return path.open("rb")


def _write_piece(file: BinaryIO, piece: bytes, tally: Tally) -> None:
    file.write(piece)
    tally.add(piece)


def _finish(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()


def _publish(partial: Path, target: Path) -> None:
    """Rename the finished `partial` over `target` and make the rename durable. The task's
    directory may vanish between making it and the rename (a `delete` of its last artifact
    removes it): then make it again."""
    for attempt in range(3):
        target.parent.mkdir(exist_ok=True)
        try:
            os.replace(partial, target)
        except FileNotFoundError:
            if attempt == 2 or not partial.exists():
                raise
            continue
        _fsync_dir(target.parent)
        return


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(file: BinaryIO, partial: Path) -> None:
    file.close()
    partial.unlink(missing_ok=True)


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        return False
    with contextlib.suppress(OSError):  # not empty (another artifact), or gone already
        path.parent.rmdir()
    return True


def _sweep(partial_dir: Path, older_than_ms: int) -> int:
    removed = 0
    for entry in partial_dir.glob(f"*{_SUFFIX}"):
        started, _, _ = entry.name.partition("-")
        if started.isdigit() and int(started) < older_than_ms:
            entry.unlink(missing_ok=True)
            removed += 1
    return removed
