"""What a task may put as an artifact's bytes, turned into one stream of pieces: bytes, a file
(a `pathlib.Path`, read piece by piece), an iterator or an async iterator of bytes.

Nothing here holds more than one piece in memory, and nothing blocks the event loop: a file
and a plain iterator are read in a worker thread, one piece per hop (the stores cut what they
are given into pieces of their own size, `_artifact_pieces.py`).

What does not live here: writing the pieces (`_artifacts.py`, the stores).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Final

import anyio
import anyio.to_thread

from ._artifact_pieces import PIECE_SIZE

__all__ = ["ArtifactData", "pieces_of"]

ArtifactData = (
    bytes | bytearray | memoryview | os.PathLike[str] | Iterable[bytes] | AsyncIterable[bytes]
)
"""What ``ctx.artifacts.put`` takes: bytes, a path to a file, or an (async) iterator of bytes."""


def pieces_of(data: ArtifactData) -> AsyncIterator[bytes]:
    """The pieces of `data`, one at a time.

    Raises:
        TypeError: `data` is none of `ArtifactData` (a `str` included: a text is not bytes and
            not a path; say which with ``text.encode()`` or ``pathlib.Path(text)``).
    """
    if isinstance(data, bytes | bytearray | memoryview):
        return _cut(memoryview(data))
    if isinstance(data, os.PathLike):
        return _file_pieces(os.fspath(data))
    if isinstance(data, str):
        raise TypeError(
            f"an artifact's data is bytes, a path or an iterator of bytes, got the str "
            f"{data[:40]!r}: pass text.encode() for its text, or pathlib.Path(...) for a file"
        )
    if isinstance(data, AsyncIterable):
        return _checked_async(data)
    if isinstance(data, Iterable):
        return _iterator_pieces(iter(data))
    raise TypeError(
        f"an artifact's data is bytes, a pathlib.Path, or an (async) iterator of bytes, got "
        f"{type(data).__name__}"
    )


async def _cut(view: memoryview) -> AsyncIterator[bytes]:
    for start in range(0, len(view), PIECE_SIZE):
        yield bytes(view[start : start + PIECE_SIZE])


async def _file_pieces(path: str) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as file:
        while piece := await file.read(PIECE_SIZE):
            yield piece


_DONE: Final = object()


def _next_or_done(iterator: Iterator[bytes]) -> object:
    return next(iterator, _DONE)


async def _iterator_pieces(iterator: Iterator[bytes]) -> AsyncIterator[bytes]:
    while (piece := await anyio.to_thread.run_sync(_next_or_done, iterator)) is not _DONE:
        yield _checked(piece)


async def _checked_async(pieces: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    async for piece in pieces:
        yield _checked(piece)


def _checked(piece: object) -> bytes:
    if isinstance(piece, bytes):
        return piece
    if isinstance(piece, bytearray | memoryview):
        return bytes(piece)
    raise TypeError(
        f"an artifact's iterator must yield bytes, it yielded {type(piece).__name__}"
        + (": encode text first (piece.encode())" if isinstance(piece, str) else "")
    )
