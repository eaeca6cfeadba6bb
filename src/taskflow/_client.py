"""The seed's client side: `AsyncTask`/`SyncTask` send tasks by name, `AsyncResult`/`SyncResult`
wait for them.

The sync classes hold no logic of their own: each call runs the async twin on the event loop
that owns the app, through ``app.lifecycle.call_sync`` (see `_lifecycle.py`). Every call that
needs the backend opens the app on the running loop if it is not open there. Waiting for a
result is push-notified by the storage.

The handles see their app as a `ClientApp` (the few things they use of a `QueueTasks`), so this
module never imports the app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from typing_extensions import Unpack

from ._artifact_records import ArtifactInfo
from ._artifacts import ArtifactKeeper
from ._clock import Clock
from ._exceptions import (
    ResultExpired,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskNotFound,
)
from ._exceptions import (
    TimeoutError as TaskflowTimeoutError,
)
from ._lifecycle import AppLifecycle
from ._message import (
    CancelResult,
    ErrorInfo,
    Progress,
    TaskOutcome,
    TaskRecord,
    TaskStatus,
    decode_value,
)
from ._options import CallOptions
from .abc import Broker, Storage

__all__ = [
    "AsyncResult",
    "AsyncTask",
    "ClientApp",
    "SyncResult",
    "SyncTask",
    "TaskInfo",
    "value_of",
]

R = TypeVar("R")

_running_loop = asyncio.get_running_loop


class ClientApp(Protocol):
    """What the handles use of their app (a `QueueTasks`)."""

    broker: Broker
    storage: Storage
    clock: Clock
    lifecycle: AppLifecycle
    artifact_keeper: ArtifactKeeper

    async def get(self, task_id: str) -> TaskRecord | None:
        """The stored record of a task, or None."""
        ...

    async def add_task(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[CallOptions],
    ) -> AsyncResult[Any]:
        """Send a task by name."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class TaskInfo:
    """A readable snapshot of a task: what `AsyncResult.info()` returns.

    Attributes:
        task_id: The task's id.
        name: Its registered name.
        queue: Its queue.
        status: Where it is now.
        attempts: Runs started so far.
        created_at: When it was enqueued (epoch seconds).
        started_at: When its latest attempt started.
        finished_at: When it reached a terminal state.
        error: The latest error (type, message, traceback), if any.
        progress: The latest `ctx.progress(...)` report, if any.
        yields: Values a generator task has yielded so far (decoded).
        result_expired: True once the result TTL has passed.
        undecodable: True if the backend could not decode the task's stored message (see
            `TaskRecord.undecodable`): the fields above are what could be read.
    """

    task_id: str
    name: str
    queue: str
    status: TaskStatus
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: ErrorInfo | None
    progress: Progress | None
    yields: list[Any]
    result_expired: bool
    undecodable: bool = False

    @classmethod
    def from_record(cls, record: TaskRecord) -> TaskInfo:
        return cls(
            task_id=record.id,
            name=record.name,
            queue=record.queue,
            status=record.status,
            attempts=record.attempts,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            error=record.error,
            progress=record.progress,
            yields=[decode_value(item) for item in record.yields],
            result_expired=record.result_expired,
            undecodable=record.undecodable,
        )


_DEFAULT_ERRORS = {
    TaskStatus.CANCELLED: ErrorInfo("Cancelled", "cancelled before it started"),
    TaskStatus.EXPIRED: ErrorInfo("TaskExpired", "not started before its expires time"),
}


def value_of(record: TaskRecord | TaskOutcome) -> Any:
    """The decoded result of a terminal record, or the matching exception raised."""
    status = record.status
    if status is TaskStatus.DONE:
        if record.result_expired:
            raise ResultExpired(record.id)
        if record.result is None:
            return None
        try:
            return decode_value(record.result)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise TaskFailed(
                record.id, "UndecodableResult", f"the stored result could not be decoded: {exc}"
            ) from None
    error = record.error or _DEFAULT_ERRORS.get(status) or ErrorInfo(status.value, "ended")
    if status is TaskStatus.CANCELLED:
        raise TaskCancelled(record.id, error.type, error.message, error.traceback)
    if status is TaskStatus.EXPIRED:
        raise TaskExpired(record.id, error.type, error.message, error.traceback)
    raise TaskFailed(record.id, error.type, error.message, error.traceback)


class AsyncResult(Generic[R]):
    """A handle on one task's outcome. ``await handle.result(timeout=5)``."""

    __slots__ = ("app", "task_id")

    def __init__(self, task_id: str, app: ClientApp) -> None:
        self.task_id = task_id
        self.app = app

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the task to end and return its value.

        Args:
            timeout: Seconds to wait; None waits as long as it takes.

        Raises:
            TaskFailed: it failed for good (`error_type`, `error_message`, `remote_traceback`),
                or its stored result cannot be decoded (`error_type` ``UndecodableResult``).
            TaskCancelled: it was cancelled.
            TaskExpired: it was not started before its `expires` time.
            ResultExpired: it finished, but its result outlived the result TTL.
            TaskNotFound: the storage never heard of this id.
            taskflow.TimeoutError: still not finished after `timeout` seconds.
        """
        app = self.app
        if app.lifecycle.loop is not _running_loop():  # the hot path's check, inlined
            await app.lifecycle.ensure_open()
        try:
            record = await app.storage.wait(self.task_id, timeout=timeout, now=app.clock.time())
        except TimeoutError:
            raise TaskflowTimeoutError(await self._not_finished(timeout)) from None
        if record.result_expired or (
            record.result_expires_at is not None and record.result_expires_at <= app.clock.time()
        ):
            record.result_expired = True
        return value_of(record)  # type: ignore[no-any-return]

    async def _not_finished(self, timeout: float | None) -> str:
        """Why `result()` timed out: no worker here to run it, or it is not done yet."""
        app = self.app
        storage = app.storage
        if not storage.shared_across_processes:  # only workers of this process can run it
            record = await storage.get(self.task_id, now=app.clock.time())
            if (
                record is not None
                and record.status is not TaskStatus.RUNNING
                and storage.local_workers(record.queue) == 0
            ):
                return (
                    f"task {self.task_id!r} ({record.name!r}) did not finish within {timeout} "
                    f"s: no worker is running in this process for queue {record.queue!r}, and "
                    f"on the {storage.scheme} backend only a worker in the process that sent a "
                    "task can run it. Run one around your code: `async with app.running():`, "
                    "or `with app.run_in_thread():` in synchronous code (or use a Redis or "
                    "PostgreSQL URL and start workers with `taskflow worker module:app`)"
                )
        return (
            f"task {self.task_id!r} did not finish within {timeout} s; it keeps running — "
            "call result() again to keep waiting"
        )

    async def status(self) -> TaskStatus:
        """The task's current status. Raises `TaskNotFound` for an unknown id."""
        return (await self._record()).status

    async def info(self) -> TaskInfo:
        """Status, attempts, timestamps, error, progress and yields so far."""
        return TaskInfo.from_record(await self._record())

    async def cancel(self) -> CancelResult:
        """Cancel the task: at once if it has not started, by request if it is running."""
        app = self.app
        await app.lifecycle.ensure_open()
        return (await app.broker.cancel([self.task_id], now=app.clock.time()))[0]

    # -- artifacts (the files the task put: ``ctx.artifacts.put``) ------------------------

    async def artifacts(self) -> list[ArtifactInfo]:
        """The task's artifacts, by name: each with its size, SHA-256, when it was ready and
        when it expires, and its state (``ready``, or ``deleted`` / ``expired`` with when and
        why). Artifacts still being written are not listed."""
        app = self.app
        await app.lifecycle.ensure_open()
        return await app.artifact_keeper.list(self.task_id)

    async def artifact(self, name: str) -> ArtifactInfo:
        """One of the task's artifacts, as `artifacts` lists it.

        Raises:
            InvalidArtifactName: `name` cannot name an artifact.
            ArtifactNotFound: the task has no artifact of that name (never put, or still being
                written).
        """
        app = self.app
        await app.lifecycle.ensure_open()
        return await app.artifact_keeper.info(self.task_id, name)

    async def fetch_artifact(self, name: str) -> AsyncGenerator[bytes, None]:
        """The artifact's bytes, piece by piece: ``async for piece in
        handle.fetch_artifact("sales.csv"): ...``. The fetch counts as complete (for
        ``delete_after_fetch``) only once the stream has been read to its end and its size
        and SHA-256 were checked.

        Raises (on the first iteration, or mid-way if it goes while being read):
            InvalidArtifactName: `name` cannot name an artifact.
            ArtifactNotFound: it is missing, still being written, expired or deleted (the
                message says which, and when).
        """
        app = self.app
        await app.lifecycle.ensure_open()
        async for piece in app.artifact_keeper.stream(self.task_id, name):
            yield piece

    async def fetch_artifact_to(self, name: str, path: str | os.PathLike[str]) -> Path:
        """Fetch the artifact into the file `path`, written under a temporary name in the same
        directory and renamed when whole (a complete fetch). Returns the path.

        Raises:
            InvalidArtifactName: `name` cannot name an artifact.
            ArtifactNotFound: it is missing, still being written, expired or deleted.
            OSError: the file cannot be written.
        """
        app = self.app
        await app.lifecycle.ensure_open()
        return await app.artifact_keeper.fetch_to_file(self.task_id, name, path)

    async def delete_artifact(self, name: str) -> bool:
        """Delete a ready artifact now (it stays listed as ``deleted``); False if there was
        no ready artifact of that name.

        Raises:
            InvalidArtifactName: `name` cannot name an artifact.
        """
        app = self.app
        await app.lifecycle.ensure_open()
        return await app.artifact_keeper.delete(self.task_id, name)

    async def _record(self) -> TaskRecord:
        record = await self.app.get(self.task_id)
        if record is None:
            raise TaskNotFound(self.task_id)
        return record

    def __repr__(self) -> str:
        return f"AsyncResult({self.task_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult | SyncResult) and other.task_id == self.task_id

    def __hash__(self) -> int:
        return hash(self.task_id)


async def _next_piece(stream: AsyncIterator[bytes]) -> bytes | None:
    """The next piece of `stream`, or None at its end (a coroutine for ``call_sync``)."""
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


class SyncResult(Generic[R]):
    """`AsyncResult` for plain synchronous code (no event loop needed)."""

    __slots__ = ("_async", "app", "task_id")

    def __init__(self, task_id: str, app: ClientApp) -> None:
        self.task_id = task_id
        self.app = app
        self._async: AsyncResult[R] = AsyncResult(task_id, app)

    def result(self, timeout: float | None = None) -> R:
        """Blocking `AsyncResult.result`."""
        return self.app.lifecycle.call_sync(self._async.result, timeout)

    def status(self) -> TaskStatus:
        """Blocking `AsyncResult.status`."""
        return self.app.lifecycle.call_sync(self._async.status)

    def info(self) -> TaskInfo:
        """Blocking `AsyncResult.info`."""
        return self.app.lifecycle.call_sync(self._async.info)

    def cancel(self) -> CancelResult:
        """Blocking `AsyncResult.cancel`."""
        return self.app.lifecycle.call_sync(self._async.cancel)

    def artifacts(self) -> list[ArtifactInfo]:
        """Blocking `AsyncResult.artifacts`."""
        return self.app.lifecycle.call_sync(self._async.artifacts)

    def artifact(self, name: str) -> ArtifactInfo:
        """Blocking `AsyncResult.artifact`."""
        return self.app.lifecycle.call_sync(self._async.artifact, name)

    def fetch_artifact(self, name: str) -> Iterator[bytes]:
        """`AsyncResult.fetch_artifact` for synchronous code: an iterator of the pieces, each
        read on the app's event loop. Read it to the end for a complete fetch."""
        call = self.app.lifecycle.call_sync
        stream = self._async.fetch_artifact(name)
        try:
            while (piece := call(_next_piece, stream)) is not None:
                yield piece
        finally:
            call(stream.aclose)

    def fetch_artifact_to(self, name: str, path: str | os.PathLike[str]) -> Path:
        """Blocking `AsyncResult.fetch_artifact_to`."""
        return self.app.lifecycle.call_sync(self._async.fetch_artifact_to, name, path)

    def delete_artifact(self, name: str) -> bool:
        """Blocking `AsyncResult.delete_artifact`."""
        return self.app.lifecycle.call_sync(self._async.delete_artifact, name)

    def __repr__(self) -> str:
        return f"SyncResult({self.task_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult | SyncResult) and other.task_id == self.task_id

    def __hash__(self) -> int:
        return hash(self.task_id)


class AsyncTask:
    """Send tasks by name, as in the seed's client: ``await AsyncTask(app).add_task("add",
    args=(2, 3))``. Same as `QueueTasks.add_task`."""

    __slots__ = ("app",)

    def __init__(self, app: ClientApp) -> None:
        self.app = app

    async def add_task(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[CallOptions],
    ) -> AsyncResult[Any]:
        """Enqueue the task registered as `task_name`; options as in `TaskFunc.options`
        (`CallOptions`).

        Raises:
            UnknownTaskError: this app has no task of that name.
            InvalidArguments: `args` / `kwargs` do not fit the task's signature.
            InvalidOption: an unknown option, or a value that breaks its option's rule.
            EncodeError: an argument cannot be encoded.
        """
        return await self.app.add_task(task_name, args, kwargs, **options)


class SyncTask:
    """`AsyncTask` for plain synchronous code: ``SyncTask(app).add_task("add", args=(2, 3))``
    returns a `SyncResult`."""

    __slots__ = ("_async", "app")

    def __init__(self, app: ClientApp) -> None:
        self.app = app
        self._async = AsyncTask(app)

    def add_task(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[CallOptions],
    ) -> SyncResult[Any]:
        """Blocking `AsyncTask.add_task` (same options, `CallOptions`; same errors)."""

        async def send() -> AsyncResult[Any]:
            return await self._async.add_task(task_name, args, kwargs, **options)

        handle = self.app.lifecycle.call_sync(send)
        return SyncResult(handle.task_id, self.app)
