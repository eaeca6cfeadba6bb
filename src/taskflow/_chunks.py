"""`Chunks`: ``ctx.chunks(source, size=...)``, a task's work walked in chunks that a re-run
resumes at the first chunk not recorded done.

A source is a `range` or a ``(start, stop)`` pair of ints (chunks are sub-ranges), a sequence
(chunks are lists of its items), any re-iterable iterable, or an async iterable (chunks are lists
of up to `size` items). When the loop asks for the next chunk, or ends, the chunk before is
recorded done: its position is saved as a checkpoint (awaited, fenced by the run's token;
`RunCheckpoints`) and progress "n of m" is reported (``ctx.progress``). A run that starts where an
earlier one of the same task saved a position (a re-run after a crash, a retry, a release) starts
at the first chunk not recorded, and its progress continues from there. An error raised in a
chunk's body names the chunk in the task's stored error (`Run.chunk_at`).

A one-shot source (an iterator that is its own iterable, an async generator) cannot be read again
from a position: refused (`NotResumable`) unless ``resume=False``, which walks it from the start
on every run and saves no position.

Async tasks walk chunks with ``async for``; sync tasks (run in a worker thread) with ``for``,
their checkpoint writes going through the event loop while the thread waits.

What does not live here: where checkpoints are kept (``_checkpoints.py``, `taskflow.abc.Storage`)
and how progress travels (``_run.py``, ``_recorder.py``).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, Final, Generic, Literal, TypeVar

import anyio.from_thread
import msgspec

from ._checkpoints import RunCheckpoints
from ._exceptions import NotResumable
from ._run import Run

__all__ = ["ChunkCount", "Chunks", "chunk_source_total"]

C_co = TypeVar("C_co", covariant=True)

ChunkCount = Literal["rows", "chunks"]
"""What ``ctx.chunks`` counts in its progress: rows (items) or chunks."""

_END: Final[Any] = object()
_KEY_PREFIX: Final = "chunks:"


class _Position(msgspec.Struct, frozen=True, array_like=True):
    """What a checkpoint of a chunk loop holds: chunks and rows recorded done."""

    chunks: int
    rows: int


_encode_position = msgspec.msgpack.Encoder().encode
_decode_position = msgspec.msgpack.Decoder(_Position).decode


class Chunks(Generic[C_co]):
    """The chunks of a source, from the first one not recorded done (``ctx.chunks``).

    Iterate it once, with ``async for`` in an async task or ``for`` in a sync one. Each chunk
    is a `range` (for a range or a ``(start, stop)`` source) or a list of items. A chunk is
    recorded done when the loop asks for the next one or ends normally, that is after its body
    returned; a `break` leaves the chunk it broke out of unrecorded. Made by
    `TaskContext.chunks` (its arguments are documented there), never directly: the rest of the
    constructor's arguments bind it to the run.

    `done_rows` and `done_chunks` are read as the loop goes; before the first chunk they are 0
    (the position of an earlier run is read when the first chunk is asked for).

    Attributes:
        name: The loop's name (``name=``); its position is kept under it.
        total: The number of rows, if known (a range, a sequence, or ``total=``).
        done_rows: Rows recorded done so far (from earlier runs included).
        done_chunks: Chunks recorded done so far (from earlier runs included).
    """

    def __init__(
        self,
        source: Any,
        *,
        size: int,
        name: str,
        total: int | None,
        message: str | None,
        count: ChunkCount,
        resume: bool,
        checkpoints: RunCheckpoints,
        run: Run,
        report: Callable[[int, int | None, str | None], None],
        loop_thread: int,
    ) -> None:
        _check_arguments(source, size, count, resume)
        self.name = name
        self.total = chunk_source_total(source) if total is None else total
        self.done_rows = 0
        self.done_chunks = 0
        self._source = source
        self._size = size
        self._message = message
        self._count: ChunkCount = count
        self._resume = resume
        self._checkpoints = checkpoints
        self._run = run
        self._report = report
        self._loop_thread = loop_thread
        self._key = _KEY_PREFIX + name
        self._started = False
        self._ended = False
        self._current: int | None = None  # rows of the chunk handed out, not recorded yet
        self._sync_chunks: Iterator[Any] | None = None
        self._async_chunks: AsyncIterator[list[Any]] | None = None
        if resume:
            checkpoints.claim_name(
                name,
                f"ctx.chunks name {name!r} is used twice in one run of task {run.task_id}: give "
                "each loop a name of its own, e.g. ctx.chunks(..., name='orders') and "
                "ctx.chunks(..., name='refunds'), so each resumes at its own position",
            )

    def __repr__(self) -> str:
        return (
            f"Chunks(name={self.name!r}, size={self._size}, done_rows={self.done_rows}, "
            f"total={self.total})"
        )

    # -- async iteration ------------------------------------------------------------------------

    def __aiter__(self) -> Chunks[C_co]:
        return self

    async def __anext__(self) -> C_co:
        if self._ended:
            raise StopAsyncIteration
        if not self._started:
            self._start(await self._read_position())
        if self._current is not None:
            await self._record()
        if self._async_chunks is not None:
            chunk: Any = await anext(self._async_chunks, _END)
        else:
            assert self._sync_chunks is not None
            chunk = next(self._sync_chunks, _END)
        if chunk is _END:
            self._end()
            raise StopAsyncIteration
        return self._hand_out(chunk)

    # -- sync iteration (sync tasks, in their worker thread) ------------------------------------

    def __iter__(self) -> Chunks[C_co]:
        return self

    def __next__(self) -> C_co:
        self._check_sync_use()
        if self._ended:
            raise StopIteration
        if not self._started:
            self._start(anyio.from_thread.run(self._read_position))
        if self._current is not None:
            anyio.from_thread.run(self._record)
        assert self._sync_chunks is not None
        chunk = next(self._sync_chunks, _END)
        if chunk is _END:
            self._end()
            raise StopIteration
        return self._hand_out(chunk)

    def _check_sync_use(self) -> None:
        if threading.get_ident() == self._loop_thread:
            raise TypeError(
                "ctx.chunks(...) in an async task is walked with `async for chunk in "
                "ctx.chunks(...)`, not `for`: its checkpoint writes are awaited"
            )
        if _is_async(self._source):
            raise TypeError(
                f"a sync task cannot walk an async iterable ({type(self._source).__name__}) "
                "with ctx.chunks: make the task async and use `async for`, or pass a sync "
                "iterable"
            )

    # -- the steps ------------------------------------------------------------------------------

    async def _read_position(self) -> _Position:
        if not self._resume:
            return _Position(0, 0)
        stored = await self._checkpoints.read(self._key)
        return _Position(0, 0) if stored is None else _decode_position(stored)

    def _start(self, position: _Position) -> None:
        """Position the source after the rows recorded done, and report where the loop is."""
        self._started = True
        self.done_chunks, self.done_rows = position.chunks, position.rows
        source, size, skip = self._source, self._size, position.rows
        if _is_async(source):
            self._async_chunks = _async_batches(source, size, skip)
        elif isinstance(source, range) or _is_pair(source):
            self._sync_chunks = _range_chunks(_as_range(source), size, skip)
        elif isinstance(source, Sequence):
            self._sync_chunks = _sequence_chunks(source, size, skip)
        else:
            self._sync_chunks = _batches(source, size, skip)
        self._report_progress()

    def _hand_out(self, chunk: Any) -> C_co:
        rows = len(chunk)
        self._current = rows
        self._run.chunk_at = self._describe(chunk, rows)
        handed: C_co = chunk
        return handed

    async def _record(self) -> None:
        """The chunk handed out last is done: save the position, then report progress."""
        rows, self._current = self._current or 0, None
        position = _Position(self.done_chunks + 1, self.done_rows + rows)
        if self._resume:
            await self._checkpoints.save(self._key, _encode_position(position))
        self.done_chunks, self.done_rows = position.chunks, position.rows
        self._run.chunk_at = None
        self._report_progress()

    def _end(self) -> None:
        self._ended = True
        self._run.chunk_at = None

    def _report_progress(self) -> None:
        done, total = self.done_rows, self.total
        if self._count == "chunks":
            done = self.done_chunks
            total = None if total is None else math.ceil(total / self._size)
        message = None
        if self._message is not None:
            message = self._message.format(done=done, total="?" if total is None else total)
        self._report(done, total, message)

    def _describe(self, chunk: Any, rows: int) -> str:
        of = "" if self.total is None else f" of {math.ceil(self.total / self._size)}"
        if isinstance(chunk, range):
            where = f"rows {chunk.start}..{chunk.start + (rows - 1) * chunk.step}"
            if chunk.step != 1:
                where = f"rows {chunk!r}"
        else:
            where = f"items {self.done_rows}..{self.done_rows + rows - 1} of the source"
        return f"chunk {self.done_chunks + 1}{of} of ctx.chunks {self.name!r} ({where})"


# -- sources ------------------------------------------------------------------------------------


def chunk_source_total(source: Any) -> int | None:
    """How many rows `source` has, where that is known without reading it (None otherwise)."""
    if _is_pair(source):
        start: int = source[0]
        stop: int = source[1]
        return max(0, stop - start)
    if hasattr(source, "__len__"):
        try:
            rows: int = len(source)
        except TypeError:
            return None
        return rows
    return None


def _check_arguments(source: Any, size: int, count: str, resume: bool) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"ctx.chunks(size=...) must be an int >= 1, got {size!r}")
    if count not in ("rows", "chunks"):
        raise ValueError(f"ctx.chunks(count=...) must be 'rows' or 'chunks', got {count!r}")
    if not (_is_async(source) or isinstance(source, Iterable)):
        raise TypeError(
            f"ctx.chunks cannot walk a {type(source).__name__}: pass a range, a (start, stop) "
            "pair of ints, a sequence, an iterable or an async iterable"
        )
    if resume and _is_one_shot(source):
        raise NotResumable(
            f"ctx.chunks cannot resume a {type(source).__name__}: it is a one-shot iterator, "
            "which a re-run cannot read again from the chunk where the last run stopped. Pass "
            "something that can be read again (a range, a list, an object whose __iter__ starts "
            "over), or walk it from the start on every run: ctx.chunks(source, size=..., "
            "resume=False)"
        )


def _is_pair(source: Any) -> bool:
    return (
        isinstance(source, tuple)
        and len(source) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in source)
    )


def _is_async(source: Any) -> bool:
    return isinstance(source, AsyncIterable)


def _is_one_shot(source: Any) -> bool:
    """An iterator that is its own iterable: iterating it again goes on where it stopped."""
    if _is_async(source):
        return isinstance(source, AsyncIterator) and source.__aiter__() is source
    return isinstance(source, Iterator) and iter(source) is source


def _as_range(source: range | tuple[int, int]) -> range:
    return source if isinstance(source, range) else range(source[0], source[1])


def _range_chunks(rows: range, size: int, skip: int) -> Iterator[range]:
    for i in range(skip, len(rows), size):
        yield rows[i : i + size]


def _sequence_chunks(items: Sequence[Any], size: int, skip: int) -> Iterator[list[Any]]:
    for i in range(skip, len(items), size):
        yield list(items[i : i + size])


def _batches(items: Iterable[Any], size: int, skip: int) -> Iterator[list[Any]]:
    it = iter(items)
    if skip:
        next(itertools.islice(it, skip, skip), None)  # consume the rows recorded done
    while batch := list(itertools.islice(it, size)):
        yield batch


async def _async_batches(
    items: AsyncIterable[Any], size: int, skip: int
) -> AsyncIterator[list[Any]]:
    batch: list[Any] = []
    async for item in items:
        if skip:
            skip -= 1
            continue
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
