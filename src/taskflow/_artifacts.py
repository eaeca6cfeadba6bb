"""Artifacts as users see them: `ArtifactKeeper` puts, lists, fetches and ends them, keeping
each one's record in the backend's `Coordination` key-value space and its bytes in the app's
`ArtifactStore`; `TaskArtifacts` is ``ctx.artifacts``, a task's side of it.

A put writes its record ``writing`` first, then the store's atomic write, then ``ready`` with a
compare-and-set on the record's version: a put that fails half-way, is cancelled, or whose
worker dies leaves nothing listed (its record is put back as it was, or marked abandoned, and
housekeeping sweeps what is left). Each put writes its bytes under a name of its own (the
artifact's name and a write id), so replacing an artifact never writes over bytes someone is
reading. Every state that housekeeping must revisit (a put that should have finished, an
expiry, a record to forget) is filed in the due-time index *before* the state is written, so a
crash in between leaves an entry that finds it (`_artifact_records.py` draws the layout).

A fetch counts as complete only when its stream was read to the end and its size and SHA-256
matched; with ``delete_after_fetch`` the first complete fetch deletes the artifact, decided once
by compare-and-set however many fetchers finish at once.

What does not live here: the records and key layout (`_artifact_records.py`), turning data
into pieces (`_artifact_sources.py`), the housekeeping pass (`_artifact_sweep.py`), the bytes
(`abc/_artifacts.py`).
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypedDict

import anyio
import msgspec
from typing_extensions import Unpack

from ._artifact_dir import DirectoryArtifactStore
from ._artifact_records import (
    CURSOR_KEY,
    INDEX_NAMESPACE,
    STALE_WRITE_S,
    ArtifactInfo,
    ArtifactRecord,
    ArtifactState,
    bucket_of,
    check_artifact_name,
    decode_record,
    encode_cursor,
    encode_due,
    encode_record,
    index_key,
    index_namespace,
    next_due,
    records_namespace,
)
from ._artifact_sources import ArtifactData, pieces_of
from ._clock import Clock
from ._exceptions import ArtifactNotFound, ConfigError, InvalidOption, LifecycleError
from ._options import NOT_GIVEN, Seconds, duration_s, given
from .abc import ArtifactBlob, ArtifactStore, Broker, Coordination

__all__ = [
    "DEFAULT_KEEP_S",
    "DEFAULT_RETENTION",
    "ArtifactKeeper",
    "PutRetention",
    "Retention",
    "TaskArtifacts",
    "check_retention_names",
    "resolve_artifact_store",
]

logger = logging.getLogger("taskflow.artifacts")

DEFAULT_KEEP_S: Final = 72 * 3600.0
"""How long an artifact is kept after it is ready when neither its task nor its put says
(the seed's 72 hours): long enough for a person to come back for a file after a weekend, and
never "forever", so a disk or a server does not fill up with files nobody fetches."""

#: Longest wait for the clean-up of a failed or cancelled put (a backend that stopped
#: answering must not hold a cancelled task forever).
_UNDO_TIMEOUT_S: Final = 10.0


class Retention(msgspec.Struct, frozen=True):
    """How long an artifact is kept: `keep_s` after it is ready (None: no limit), and/or until
    its first complete fetch (`delete_after_fetch`); whichever comes first."""

    keep_s: float | None = DEFAULT_KEEP_S
    delete_after_fetch: bool = False

    def overridden(self, keep: object, delete_after_fetch: object) -> Retention:
        """This retention with a put's own `keep` / `delete_after_fetch` (`NOT_GIVEN`: this
        one's).

        Raises:
            InvalidOption: `keep` is not a duration or None, or `delete_after_fetch` not a bool.
        """
        keep_s = self.keep_s
        if keep is not NOT_GIVEN:
            keep_s = None if keep is None else duration_s(keep)
            if keep is not None and keep_s is None:
                raise InvalidOption(
                    f"keep must be seconds >= 0 (a number or a timedelta), or None to keep it "
                    f"until it is fetched or deleted, got {keep!r}"
                )
        flag = given(delete_after_fetch, self.delete_after_fetch)
        if not isinstance(flag, bool):
            raise InvalidOption(f"delete_after_fetch must be True or False, got {flag!r}")
        return Retention(keep_s, flag)


DEFAULT_RETENTION: Final = Retention()
"""Kept 72 hours after it is ready; a fetch does not delete it."""


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def why_not_ready(record: ArtifactRecord, now: float) -> str | None:
    """Why `record` cannot be fetched at `now`, in words; None if it can."""
    state = record.state
    if state is ArtifactState.READY:
        info = ArtifactInfo.of(record, now)
        if info.state is ArtifactState.READY:
            return None
        return f"it expired at {_when(info.ended_at)} ({info.ended_why})"
    if state is ArtifactState.WRITING:
        return f"it is still being written (its put began at {_when(record.created_at)})"
    if state is ArtifactState.ABANDONED:
        return f"its put did not finish ({record.ended_why}); put it again"
    went = "expired" if state is ArtifactState.EXPIRED else "was deleted"
    return f"it {went} at {_when(record.ended_at)} ({record.ended_why})"


class ArtifactKeeper:
    """Puts, lists, fetches and ends artifacts: records in `coordination`, bytes in `store`.

    Package-internal: the app builds one (``app.artifact_keeper``); ``ctx.artifacts``, the
    result handles and every worker's housekeeping (`_artifact_sweep.py`) use it.

    Args:
        store: Where the bytes are kept.
        coordination: The backend's key-value space, where the records are kept.
        clock: The app's clock: every time here comes from it.
        forget_after_s: How long the record of an ended (deleted, expired) artifact stays
            listed before housekeeping drops it.
    """

    def __init__(
        self,
        store: ArtifactStore,
        coordination: Coordination,
        clock: Clock,
        *,
        forget_after_s: float,
    ) -> None:
        self.store = store
        self.coordination = coordination
        self.clock = clock
        self.forget_after_s = forget_after_s
        #: Whether this process has made sure the index's cursor exists (`file_due`).
        self._cursor_known = False

    # -- reading records ---------------------------------------------------------------------

    async def list(self, task_id: str) -> list[ArtifactInfo]:
        """The task's artifacts, by name: ready ones and the ended ones still remembered."""
        records = await self.coordination.kv_list(records_namespace(task_id))
        now = self.clock.time()
        found = []
        for name, versioned in sorted(records.items()):
            try:
                record = decode_record(versioned.value)
            except msgspec.DecodeError:
                logger.warning("task %s: the record of artifact %r is unreadable", task_id, name)
                continue
            if record.state not in (ArtifactState.WRITING, ArtifactState.ABANDONED):
                found.append(ArtifactInfo.of(record, now))
        return found

    async def get(self, task_id: str, name: str) -> tuple[ArtifactRecord, int] | None:
        """The record of one artifact and its version, or None."""
        versioned = await self.coordination.kv_get(records_namespace(task_id), name)
        if versioned is None:
            return None
        return decode_record(versioned.value), versioned.version

    async def info(self, task_id: str, name: str) -> ArtifactInfo:
        """One listed artifact.

        Raises:
            InvalidArtifactName: `name` cannot name an artifact.
            ArtifactNotFound: none of that name is listed.
        """
        check_artifact_name(name)
        got = await self.get(task_id, name)
        now = self.clock.time()
        if got is None:
            raise ArtifactNotFound(task_id, name)
        record = got[0]
        if record.state in (ArtifactState.WRITING, ArtifactState.ABANDONED):
            raise ArtifactNotFound(task_id, name, why_not_ready(record, now) or "")
        return ArtifactInfo.of(record, now)

    async def _ready(self, task_id: str, name: str) -> tuple[ArtifactRecord, int]:
        check_artifact_name(name)
        got = await self.get(task_id, name)
        if got is None:
            raise ArtifactNotFound(task_id, name)
        why = why_not_ready(got[0], self.clock.time())
        if why is not None:
            raise ArtifactNotFound(task_id, name, why)
        return got

    # -- put -------------------------------------------------------------------------------

    async def put(
        self, task_id: str, name: str, data: ArtifactData, retention: Retention
    ) -> ArtifactInfo:
        """Store `data` as the task's artifact `name` (replacing one of that name once whole).

        Raises:
            InvalidArtifactName: `name` cannot name an artifact.
            TypeError: `data` is not bytes, a path, or an (async) iterator of bytes.
            ArtifactNotFound: another put of this name replaced this one while it was written.
        """
        check_artifact_name(name)
        pieces = pieces_of(data)
        now = self.clock.time()
        writing = ArtifactRecord(
            task_id=task_id,
            name=name,
            blob=f"{name}~{secrets.token_hex(8)}",
            state=ArtifactState.WRITING,
            created_at=now,
            keep_s=retention.keep_s,
            delete_after_fetch=retention.delete_after_fetch,
        )
        await self.file_due(task_id, name, now + STALE_WRITE_S, now)
        previous, version = await self._begin(writing)
        try:
            blob = await self.store.write(task_id, writing.blob, pieces, now=now)
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_UNDO_TIMEOUT_S):
                await self._undo(writing, version, previous)
            raise
        return await self._make_ready(writing, version, previous, blob)

    async def _begin(self, writing: ArtifactRecord) -> tuple[ArtifactRecord | None, int]:
        """Write the ``writing`` record over whatever record of that name there is; returns
        that one (None if none) and the new record's version."""
        namespace = records_namespace(writing.task_id)
        value = encode_record(writing)
        while True:
            current = await self.coordination.kv_get(namespace, writing.name)
            expect = 0 if current is None else current.version
            version = await self.coordination.kv_set(
                namespace, writing.name, value, expect_version=expect
            )
            if version is not None:
                return (None if current is None else decode_record(current.value)), version

    async def _undo(
        self, writing: ArtifactRecord, version: int, previous: ArtifactRecord | None
    ) -> None:
        """After a failed put: the earlier artifact of that name as it was, or the record
        marked abandoned (not listed; housekeeping forgets it)."""
        now = self.clock.time()
        if previous is not None and previous.state is ArtifactState.READY:
            due = next_due(previous)
            if due is not None:
                await self.file_due(writing.task_id, writing.name, due, now)
            await self.coordination.kv_set(
                records_namespace(writing.task_id),
                writing.name,
                encode_record(previous),
                expect_version=version,
            )
            return
        await self.end(
            writing, version, ArtifactState.ABANDONED, "its put failed", now, forget_at=now
        )

    async def _make_ready(
        self,
        writing: ArtifactRecord,
        version: int,
        previous: ArtifactRecord | None,
        blob: ArtifactBlob,
    ) -> ArtifactInfo:
        now = self.clock.time()
        ready = msgspec.structs.replace(
            writing, state=ArtifactState.READY, size=blob.size, sha256=blob.sha256, ready_at=now
        )
        task_id, name = writing.task_id, writing.name
        if ready.expires_at is not None:
            await self.file_due(task_id, name, ready.expires_at, now)
        stored = await self.coordination.kv_set(
            records_namespace(task_id), name, encode_record(ready), expect_version=version
        )
        if stored is None:
            await self.store.delete(task_id, writing.blob)
            raise ArtifactNotFound(
                task_id,
                name,
                "another put of this name replaced this one while it was being written (or it "
                f"took longer than {STALE_WRITE_S / 3600:g} h and was taken for abandoned)",
            )
        if previous is not None:
            await self.store.delete(task_id, previous.blob)
        return ArtifactInfo.of(ready, now)

    # -- fetch -----------------------------------------------------------------------------

    async def stream(self, task_id: str, name: str) -> AsyncIterator[bytes]:
        """The artifact's bytes in pieces; read to the end, the fetch counts as complete.

        Raises (on the first iteration, or mid-way if it goes while being read):
            InvalidArtifactName: `name` cannot name an artifact.
            ArtifactNotFound: none of that name is ready (the message says why and when).
        """
        record, version = await self._ready(task_id, name)
        async for piece in self._verified(record):
            yield piece
        await self._fetched(record, version)

    async def fetch_to_file(self, task_id: str, name: str, path: str | os.PathLike[str]) -> Path:
        """Write the artifact to `path` (through a temporary file in the same directory,
        renamed when whole, so `path` never holds part of it). Returns the path.

        Raises:
            InvalidArtifactName: `name` cannot name an artifact.
            ArtifactNotFound: none of that name is ready (the message says why and when).
            OSError: the file cannot be written.
        """
        record, version = await self._ready(task_id, name)
        target = Path(path)
        temp = anyio.Path(target.with_name(f".{target.name}.{secrets.token_hex(4)}.part"))
        try:
            async with await anyio.open_file(temp, "wb") as file:
                async for piece in self._verified(record):
                    await file.write(piece)
            await temp.replace(target)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await temp.unlink(missing_ok=True)
            raise
        await self._fetched(record, version)
        return target

    async def _verified(self, record: ArtifactRecord) -> AsyncIterator[bytes]:
        """The stored bytes, checked against the record's size and SHA-256 at the end."""
        digest = hashlib.sha256()
        size = 0
        try:
            async for piece in self.store.read(record.task_id, record.blob):
                digest.update(piece)
                size += len(piece)
                yield piece
        except ArtifactNotFound:
            raise ArtifactNotFound(
                record.task_id, record.name, await self._why_gone(record)
            ) from None
        if size != record.size or digest.hexdigest() != record.sha256:
            raise ArtifactNotFound(record.task_id, record.name, await self._why_gone(record))

    async def _why_gone(self, record: ArtifactRecord) -> str:
        got = await self.get(record.task_id, record.name)
        now = self.clock.time()
        why = None if got is None else why_not_ready(got[0], now)
        if got is not None and why is None:
            why = "it was replaced by a new put while being read; fetch it again"
        return f"its bytes went while being read: {why or 'its record is gone'}"

    async def _fetched(self, record: ArtifactRecord, version: int) -> None:
        if record.delete_after_fetch:
            await self.end(
                record,
                version,
                ArtifactState.DELETED,
                "deleted after its first complete fetch",
                self.clock.time(),
            )

    async def delete(self, task_id: str, name: str) -> bool:
        """Delete a ready artifact now (it stays listed as deleted); False if none was ready.

        Raises:
            InvalidArtifactName: `name` cannot name an artifact.
        """
        check_artifact_name(name)
        got = await self.get(task_id, name)
        now = self.clock.time()
        if got is None or why_not_ready(got[0], now) is not None:
            return False
        return await self.end(*got, ArtifactState.DELETED, "deleted by request", now)

    # -- shared with housekeeping ------------------------------------------------------------

    async def end(
        self,
        record: ArtifactRecord,
        version: int,
        state: ArtifactState,
        why: str,
        now: float,
        *,
        ended_at: float | None = None,
        forget_at: float | None = None,
    ) -> bool:
        """Mark `record` ended (compare-and-set on `version`: of several callers, one wins)
        and delete its bytes. False if the record changed since `version` was read."""
        forget = now + self.forget_after_s if forget_at is None else forget_at
        ended = msgspec.structs.replace(
            record,
            state=state,
            ended_at=now if ended_at is None else ended_at,
            ended_why=why,
            forget_at=forget,
        )
        await self.file_due(record.task_id, record.name, forget, now)
        stored = await self.coordination.kv_set(
            records_namespace(record.task_id),
            record.name,
            encode_record(ended),
            expect_version=version,
        )
        if stored is None:
            return False
        await self.store.delete(record.task_id, record.blob)
        logger.debug("artifact %r of task %s %s: %s", record.name, record.task_id, state, why)
        return True

    async def file_due(self, task_id: str, name: str, due: float, now: float) -> None:
        """File the artifact in the due-time index, for housekeeping to look at at `due`."""
        coordination = self.coordination
        if not self._cursor_known:
            # The cursor starts at the first bucket anything was filed from (`now`: every due
            # time filed is `now` or later).
            await coordination.kv_set(
                INDEX_NAMESPACE, CURSOR_KEY, encode_cursor(bucket_of(now)), expect_version=0
            )
            self._cursor_known = True
        await coordination.kv_set(
            index_namespace(bucket_of(due)), index_key(task_id, name), encode_due(due)
        )


class PutRetention(TypedDict, total=False):
    """A put's own retention (``ctx.artifacts.put(name, data, keep=..., ...)``); what it
    leaves out is the task's.

    Attributes:
        keep: Keep it this long after it is ready (seconds >= 0 or a `timedelta`); None: no
            time limit.
        delete_after_fetch: Delete it after its first complete fetch.
    """

    keep: Seconds | None
    delete_after_fetch: bool


def check_retention_names(retention: Mapping[str, object]) -> None:
    """Refuse a keyword `put` does not take (a ``**dict`` is not checked by mypy).

    Raises:
        InvalidOption: an unknown keyword.
    """
    for name in retention:
        if name not in PutRetention.__optional_keys__:
            raise InvalidOption(
                f"ctx.artifacts.put takes keep= and delete_after_fetch=, not {name}="
            )


class TaskArtifacts:
    """``ctx.artifacts``: the files a task produces, kept beside its result.

    ```python
    @app.task(artifacts_keep=timedelta(hours=72))
    async def export(ctx: TaskContext, table: str) -> None:
        await ctx.artifacts.put("sales.csv", Path("/tmp/sales.csv"))     # streamed
        await ctx.artifacts.put("summary.txt", b"12 rows", delete_after_fetch=True)
    ```

    A sync task (run in a thread) uses `put_sync`, which runs the put on the worker's loop
    and waits for it.
    """

    __slots__ = ("_keeper", "_loop", "_loop_thread", "_retention", "task_id")

    def __init__(self, keeper: ArtifactKeeper, task_id: str, retention: Retention) -> None:
        self._keeper = keeper
        self._retention = retention
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.task_id = task_id

    async def put(
        self, name: str, data: ArtifactData, **retention: Unpack[PutRetention]
    ) -> ArtifactInfo:
        """Store `data` as this task's artifact `name`, visible once whole (a put of a name
        already used replaces that artifact then).

        Args:
            name: A plain file name: not empty, at most 200 bytes of UTF-8, without ``/``,
                ``\\``, ``..`` or NUL.
            data: Bytes, a `pathlib.Path` (the file is streamed), or an iterator or async
                iterator of bytes (streamed, never held whole).
            keep: Keep it this long after it is ready (seconds or a `timedelta`); None: no time
                limit. Default: the task's ``artifacts_keep`` (72 h if it sets none).
            delete_after_fetch: Delete it after its first complete fetch. Default: the task's
                ``artifacts_delete_after_fetch`` (False if it sets none). With `keep` too,
                whichever comes first.

        Returns:
            Its `ArtifactInfo` (size, SHA-256, when it is ready and expires).

        Raises:
            InvalidArtifactName: `name` cannot name an artifact.
            InvalidOption: `keep` or `delete_after_fetch` of the wrong kind.
            TypeError: `data` is not one of the kinds above.
            OSError: the file cannot be read.
        """
        check_retention_names(retention)
        chosen = self._retention.overridden(
            retention.get("keep", NOT_GIVEN), retention.get("delete_after_fetch", NOT_GIVEN)
        )
        return await self._keeper.put(self.task_id, name, data, chosen)

    def put_sync(
        self, name: str, data: ArtifactData, **retention: Unpack[PutRetention]
    ) -> ArtifactInfo:
        """`put` for a sync task (it runs in a thread): runs the put on the worker's event
        loop and waits for it. Same arguments and errors.

        Raises:
            LifecycleError: called on the worker's event loop (an async task: ``await
                ctx.artifacts.put(...)``).
        """
        if threading.get_ident() == self._loop_thread:
            raise LifecycleError(
                "ctx.artifacts.put_sync blocks, and this is the worker's event loop: in an "
                "async task use `await ctx.artifacts.put(...)`"
            )
        put = self.put(name, data, **retention)
        return asyncio.run_coroutine_threadsafe(put, self._loop).result()

    async def list(self) -> list[ArtifactInfo]:
        """This task's artifacts (as `AsyncResult.artifacts` lists them)."""
        return await self._keeper.list(self.task_id)

    def __repr__(self) -> str:
        return f"TaskArtifacts(task_id={self.task_id!r})"


def resolve_artifact_store(
    artifacts: ArtifactStore | str | os.PathLike[str] | None, broker: Broker, app: str
) -> ArtifactStore:
    """The app's `ArtifactStore`: the one given, a `DirectoryArtifactStore` on a path given,
    else the backend's own (`Broker.default_artifact_store`), else a directory of this process
    (`process_directory`).

    Raises:
        ConfigError: `artifacts` is none of these.
    """
    if isinstance(artifacts, ArtifactStore):
        return artifacts
    if isinstance(artifacts, str | os.PathLike):
        return DirectoryArtifactStore(artifacts)
    if artifacts is not None:
        raise ConfigError(
            f"artifacts must be an ArtifactStore or a directory path, got {artifacts!r}: for "
            "example QueueTasks(..., artifacts='/srv/exports')"
        )
    store = broker.default_artifact_store()
    if store is not None:
        return store
    if broker.storage.shared_across_processes:
        logger.warning(
            "app %r: the %s backend keeps no artifacts, so they go to a directory only this "
            "process sees; give every process the same store: QueueTasks(..., "
            "artifacts='/a/shared/directory')",
            app,
            broker.storage.scheme,
        )
    return DirectoryArtifactStore(process_directory(app))


def process_directory(app: str) -> Path:
    """A fresh directory path for the artifacts of this process (under the system's temporary
    directory; created when the store opens, removed when the process exits), as the
    in-memory backend's tasks live and die with the process."""
    path = Path(tempfile.gettempdir()) / f"taskflow-{app}-artifacts-{secrets.token_hex(6)}"
    atexit.register(_remove_at_exit, path, os.getpid())
    return path


def _remove_at_exit(path: Path, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child, whose parent still uses it
        shutil.rmtree(path, ignore_errors=True)
