"""What every `ArtifactStore` does to the stream it writes: cut it into pieces of one size, and
count and hash it on the way.

`fixed_pieces` turns the pieces a producer gives (any sizes: a few bytes, or one 200 MB bytes
object) into pieces of exactly `size` bytes but the last, copying at most one piece at a time,
so a store holds about one piece of the artifact, never the whole. `Tally` is the size and
SHA-256 of what went by (`ArtifactBlob`); it hashes a piece off the event loop (``hashlib``
releases the GIL on large inputs, so the loop keeps running while a megabyte is hashed).

What does not live here: where the pieces go (``_artifact_dir.py``, ``redis/_artifacts.py``,
``postgres/_artifacts.py``), and the contract itself (``abc/_artifacts.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import Final

import anyio.to_thread

from .abc import ArtifactBlob

__all__ = ["PIECE_SIZE", "Tally", "fixed_pieces"]

#: The size of the pieces stores write and read: 1 MiB. Big enough that the per-call cost (a
#: round trip to Redis or PostgreSQL, a thread hop for a file) is paid once per megabyte, a
#: 200 MB artifact being 200 calls; small enough that a store holds only a megabyte or two of
#: an artifact at a time, that one Redis command or one PostgreSQL row never blocks its server
#: for long (a 1 MiB value is copied in well under a millisecond), and far below Redis's 512 MB
#: bulk-string limit and PostgreSQL's 1 GB field limit.
PIECE_SIZE: Final = 1 << 20


async def fixed_pieces(
    pieces: AsyncIterable[bytes], size: int = PIECE_SIZE
) -> AsyncIterator[bytes]:
    """Yield the bytes of `pieces` in pieces of exactly `size` bytes, the last one shorter
    (nothing at all for an empty stream).

    Raises:
        TypeError: a piece is not bytes-like.
    """
    held = bytearray()
    async for piece in pieces:
        view = _bytes_view(piece)
        if held:
            take = size - len(held)
            held += view[:take]
            view = view[take:]
            if len(held) < size:
                continue
            yield bytes(held)
            held.clear()
        while len(view) >= size:
            yield bytes(view[:size])
            view = view[size:]
        held += view
    if held:
        yield bytes(held)


def _bytes_view(piece: object) -> memoryview:
    if not isinstance(piece, bytes | bytearray | memoryview):
        raise TypeError(
            f"an artifact's pieces must be bytes, got {type(piece).__name__}: encode text "
            "first (for example text.encode()), or pass a path or bytes to put"
        )
    return memoryview(piece).cast("B")


class Tally:
    """The size and SHA-256 of the pieces it was given, in order."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    def add(self, piece: bytes) -> None:
        """Count and hash `piece` here (for callers already off the event loop)."""
        self._sha.update(piece)
        self.size += len(piece)

    async def add_off_loop(self, piece: bytes) -> None:
        """Count and hash `piece` in a worker thread."""
        await anyio.to_thread.run_sync(self.add, piece)

    def blob(self) -> ArtifactBlob:
        """What was written: its size and SHA-256."""
        return ArtifactBlob(size=self.size, sha256=self._sha.hexdigest())
