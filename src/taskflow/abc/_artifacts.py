"""The `ArtifactStore` contract: where the bytes of the files tasks produce are kept.

A store is a plain keyed blob store: it writes a stream of pieces atomically (visible only once
whole), reads one back as a stream, and deletes. It knows nothing of retention, fetch counts or
expiry: the core keeps each artifact's metadata (size, checksum, retention, state) in the
backend's `Coordination` key-value space and asks the store only for bytes. So an object store
(S3, GCS) plugs in by implementing the four hooks below: a multipart upload completed at the
end is the atomic write; an unfinished one is what `sweep_partial` aborts.

Two implementations ship: a directory (the embedded backend's default, and any directory every
host mounts) and the task backend itself (Redis and PostgreSQL keep artifacts in chunks, so
workers on several hosts need no other service).

Rules (the conformance suite in ``tests/conformance`` checks each against every store):

* **Streams, never whole.** `write` consumes its pieces one at a time and `read` yields pieces;
  neither holds the whole artifact in memory.
* **Atomic.** A write that fails or is interrupted half-way leaves nothing `read` can see, and a
  second write of the same key replaces the first only once it is whole. Its leftovers are
  removed by `sweep_partial`.
* **Time comes in**, as in every contract: ``now`` stamps a write's start, so `sweep_partial`
  can tell an abandoned write from one in progress.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator

import msgspec

from ._lifecycle import Lifecycle

__all__ = ["ArtifactBlob", "ArtifactStore"]


class ArtifactBlob(msgspec.Struct, frozen=True, kw_only=True):
    """What `ArtifactStore.write` stored: its size in bytes and its SHA-256 (hex)."""

    size: int
    sha256: str


class ArtifactStore(Lifecycle, ABC):
    """Keeps artifact bytes under ``(task_id, name)``. Subclasses implement the ``_hooks``.

    Names reach a store already checked (no ``/``, ``..``, NUL, nothing empty), so a directory
    store may use them as file names.
    """

    async def write(
        self, task_id: str, name: str, pieces: AsyncIterable[bytes], *, now: float
    ) -> ArtifactBlob:
        """Store the bytes of `pieces` under ``(task_id, name)``, visible only once all of them
        are stored (replacing an earlier artifact of that key then). If `pieces` raises, or the
        write is cancelled, nothing is visible and the exception propagates."""
        self._check_open()
        return await self._write(task_id, name, pieces, now)

    def read(self, task_id: str, name: str) -> AsyncIterator[bytes]:
        """Yield the stored bytes in pieces.

        Raises:
            ArtifactNotFound: nothing is stored under that key (raised on the first iteration).
        """
        self._check_open()
        return self._read(task_id, name)

    async def delete(self, task_id: str, name: str) -> bool:
        """Delete one artifact's bytes; False if there were none."""
        self._check_open()
        return await self._delete(task_id, name)

    async def sweep_partial(self, *, older_than: float) -> int:
        """Remove the leftovers of writes started before `older_than` that never finished (a
        worker killed mid-put). Returns how many were removed."""
        self._check_open()
        return await self._sweep_partial(older_than)

    @abstractmethod
    async def _write(
        self, task_id: str, name: str, pieces: AsyncIterable[bytes], now: float
    ) -> ArtifactBlob:
        """See `write`."""

    @abstractmethod
    def _read(self, task_id: str, name: str) -> AsyncIterator[bytes]:
        """See `read` (an async generator)."""

    @abstractmethod
    async def _delete(self, task_id: str, name: str) -> bool:
        """See `delete`."""

    @abstractmethod
    async def _sweep_partial(self, older_than: float) -> int:
        """See `sweep_partial`."""
