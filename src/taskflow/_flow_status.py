"""A submitted flow: its handle (`FlowHandle`, `SyncFlowHandle`) and what its tasks add up to
(`FlowStatus`, `NodeStatus`, `FlowState`).

Everything is read through `Storage.flow_tasks` (one call: every task of the flow, its nodes and
the shards and joins of their fan-outs), so a handle made in another process
(``app.get_flow(flow_id)``) knows as much as the one `Flow.submit` returned. The roll-up is the
one orders use (`_rollup.py`: `Counts`, ``"7 of 12 done, 1 failed: reason"``). Waiting for the
end is push-driven (`Storage.wait` on each unfinished task, then one more read for tasks added
meanwhile); `FlowHandle.watch` follows the event streams of the flow's queues.

What does not live here: declaring and submitting a flow (`_flow.py`), the worker's side
(`_flow_inputs.py`, `_fan_out.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final, Protocol

import msgspec

from ._client import value_of
from ._clock import Clock
from ._config import GlobalConfig
from ._exceptions import FlowFailed, FlowNotFound
from ._exceptions import TimeoutError as TaskflowTimeout
from ._lifecycle import AppLifecycle
from ._message import SKIPPED, UPSTREAM_FAILED, TaskRecord, TaskStatus
from ._rollup import Counts, count_state, failure_reason, summarize
from .abc import LATEST, Broker, Storage

__all__ = [
    "FlowApp",
    "FlowHandle",
    "FlowState",
    "FlowStatus",
    "NodeStatus",
    "SyncFlowHandle",
    "flow_status",
]

# How many unfinished tasks `FlowHandle.wait` waits for at once.
_WAIT_BATCH: Final = 256
# How long `watch` gives its event followers to end before it cancels them again.
_CANCEL_AGAIN_S: Final = 0.05
# Error types of tasks ended by another task's failure: their reasons come after the causes.
_FOLLOWERS: Final = frozenset({UPSTREAM_FAILED, SKIPPED})


class FlowApp(Protocol):
    """What a flow's handle uses of its app (a `QueueTasks`)."""

    config: GlobalConfig
    clock: Clock
    broker: Broker
    storage: Storage
    lifecycle: AppLifecycle


class FlowState(str, enum.Enum):
    """Where a flow is (the words of `OrderState`, so viewers show both alike)."""

    RUNNING = "running"
    """Some task of it has not ended."""
    SUCCEEDED = "succeeded"
    """Every task ended done."""
    FAILED = "failed"
    """Every task ended, and one failed or expired (those it failed or skipped too)."""
    CANCELLED = "cancelled"
    """Every task ended, none failed, and one was cancelled."""

    @property
    def final(self) -> bool:
        """True for succeeded, failed and cancelled."""
        return self is not FlowState.RUNNING


class NodeStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One task of a flow: a node, a shard or join of a fan-out.

    Attributes:
        node: Its name in the flow (``"load"``, ``"split.shard[3]"``).
        task_id: Its task's id.
        task: Its task's registered name.
        queue: Its queue.
        status: Its `TaskStatus`.
        state: The `Counts` field it counts in (``"waiting"``, ``"running"``, ``"done"``...).
        attempts: Runs started.
        waits_for: The ids of its parents.
        reason: Why it failed or was cancelled (``"<error type>: <message>"``), else None.
        finished_at: When it ended (epoch seconds), else None.
    """

    node: str
    task_id: str
    task: str
    queue: str
    status: TaskStatus
    state: str
    attempts: int = 0
    waits_for: list[str] = []
    reason: str | None = None
    finished_at: float | None = None


class FlowStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What `FlowHandle.status` says of a flow.

    Attributes:
        flow_id: The flow's id.
        name: Its name (``""`` when the handle came from `QueueTasks.get_flow`: the name is
            not stored).
        state: Its `FlowState`.
        counts: Its tasks by state.
        nodes: Each task, oldest first (hedge copies left out: they share their task's fate).
    """

    flow_id: str
    name: str
    state: FlowState
    counts: Counts
    nodes: list[NodeStatus]

    @property
    def total(self) -> int:
        """How many tasks the flow has (so far: fan-outs add theirs as they run)."""
        return len(self.nodes)

    @property
    def failures(self) -> list[NodeStatus]:
        """The tasks that failed (or expired), those that caused it first."""
        failed = [n for n in self.nodes if n.state == "failed"]
        return sorted(failed, key=lambda n: (n.reason or "").split(":")[0] in _FOLLOWERS)

    @property
    def summary(self) -> str:
        """One line, as for orders: ``"7 of 12 done, 1 failed: KeyError: 'day'"``."""
        return summarize(self.total, self.counts, [n.reason or "failed" for n in self.failures])

    def node(self, name: str) -> NodeStatus:
        """The task named `name` in the flow.

        Raises:
            KeyError: no task of the flow has that name.
        """
        for node in self.nodes:
            if node.node == name:
                return node
        raise KeyError(f"flow {self.flow_id!r} has no node {name!r}")


def flow_status(flow_id: str, name: str, records: Sequence[TaskRecord]) -> FlowStatus:
    """The `FlowStatus` of a flow's task records (as `Storage.flow_tasks` returns them)."""
    counts = Counts()
    nodes: list[NodeStatus] = []
    for record in records:
        if record.copy:
            continue
        state = count_state(record)
        counts.count(state)
        nodes.append(_node_status(record, state))
    return FlowStatus(
        flow_id=flow_id, name=name, state=_flow_state(counts), counts=counts, nodes=nodes
    )


def _node_status(record: TaskRecord, state: str) -> NodeStatus:
    ended_badly = state in ("failed", "cancelled")
    return NodeStatus(
        node=record.node or record.name,
        task_id=record.id,
        task=record.name,
        queue=record.queue,
        status=record.status,
        state=state,
        attempts=record.attempts,
        waits_for=list(record.waits_for),
        reason=failure_reason(record.error) if ended_badly else None,
        finished_at=record.finished_at,
    )


def _flow_state(counts: Counts) -> FlowState:
    if counts.done + counts.failed + counts.cancelled < counts.total:
        return FlowState.RUNNING
    if counts.failed:
        return FlowState.FAILED
    if counts.cancelled:
        return FlowState.CANCELLED
    return FlowState.SUCCEEDED


class FlowHandle:
    """A handle on a submitted flow (`Flow.submit`, `QueueTasks.get_flow`).

    Attributes:
        flow_id: The flow's id (what `QueueTasks.get_flow` and ``taskflow flow`` take).
        name: Its name (``""`` from `QueueTasks.get_flow`).
        tasks: Node name -> task id of the nodes submitted through this handle (empty from
            `QueueTasks.get_flow`: `status` lists them).
    """

    __slots__ = ("_app", "flow_id", "name", "tasks")

    def __init__(
        self, app: FlowApp, flow_id: str, *, name: str = "", tasks: Mapping[str, str] = {}
    ) -> None:
        self._app = app
        self.flow_id = flow_id
        self.name = name
        self.tasks: Mapping[str, str] = dict(tasks)

    async def records(self) -> list[TaskRecord]:
        """Every stored task record of the flow, oldest first (`Storage.flow_tasks`)."""
        app = self._app
        await app.lifecycle.ensure_open()
        return await app.storage.flow_tasks(self.flow_id, now=app.clock.time())

    async def status(self) -> FlowStatus:
        """The flow's state, each task's status and the roll-up, read in one call.

        Raises:
            FlowNotFound: no task of the flow is stored.
        """
        records = await self.records()
        if not records:
            raise FlowNotFound(self.flow_id)
        return flow_status(self.flow_id, self.name, records)

    async def wait(self, timeout: float | None = None) -> FlowStatus:
        """Wait until every task of the flow has ended (push-notified); its final status.

        Raises:
            FlowNotFound: no task of the flow is stored.
            taskflow.TimeoutError: it had not ended within `timeout` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                return await self._wait_ended()
        except TimeoutError:
            raise TaskflowTimeout(
                f"flow {self.flow_id!r} had not ended after {timeout} s"
            ) from None

    async def _wait_ended(self) -> FlowStatus:
        while True:
            status = await self.status()
            if status.state.final:
                return status
            unfinished = [n.task_id for n in status.nodes if not n.status.terminal]
            storage, clock = self._app.storage, self._app.clock
            for start in range(0, len(unfinished), _WAIT_BATCH):
                batch = unfinished[start : start + _WAIT_BATCH]
                await asyncio.gather(
                    *(storage.wait(task_id, timeout=None, now=clock.time()) for task_id in batch)
                )
            # Then read again: a fan-out may have added tasks meanwhile.

    async def result(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the end; each task's result by node name if every task ended done.

        Raises:
            FlowFailed: a task failed, expired or was cancelled (its `status` says which).
            FlowNotFound: no task of the flow is stored.
            taskflow.TimeoutError: it had not ended within `timeout` seconds.
        """
        status = await self.wait(timeout)
        if status.state is not FlowState.SUCCEEDED:
            raise FlowFailed(status.flow_id, status.state.value, status.summary, status)
        records = await self.records()
        return {
            record.node or record.name: value_of(record) for record in records if not record.copy
        }

    async def cancel(self) -> int:
        """Cancel every task of the flow that has not ended: at once if it is not running, by
        request if it is. Reads the flow again after each round, until it finds no task left
        that it has not cancelled, so shards a running node adds meanwhile are cancelled too.
        Returns how many tasks it cancelled or asked to stop."""
        app = self._app
        await app.lifecycle.ensure_open()
        reached: set[str] = set()
        while True:
            records = await app.storage.flow_tasks(self.flow_id, now=app.clock.time())
            todo = [r.id for r in records if not r.status.terminal and r.id not in reached]
            if not todo:
                return len(reached)
            await app.broker.cancel(todo, now=app.clock.time())
            reached.update(todo)

    async def watch(self, *, refresh_s: float = 1.0) -> AsyncIterator[FlowStatus]:
        """Yield the flow's status now and each time it changes, until it has ended (the last
        one yielded is final). Follows the event streams of the flow's queues, and reads again
        at least every `refresh_s` seconds.

        Raises:
            FlowNotFound: no task of the flow is stored.
        """
        status = await self.status()
        yield status
        if status.state.final:
            return
        changed = asyncio.Event()
        queues = {node.queue for node in status.nodes}
        async with _followers(self._app.storage, queues, self.flow_id, changed):
            while not status.state.final:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(refresh_s):
                        await changed.wait()
                changed.clear()
                latest = await self.status()
                if latest != status:
                    status = latest
                    yield status

    @property
    def lifecycle(self) -> AppLifecycle:
        """Package-internal: its app's lifecycle (`SyncFlowHandle` calls through it)."""
        return self._app.lifecycle

    def __repr__(self) -> str:
        return f"FlowHandle({self.flow_id!r}, name={self.name!r})"


@contextlib.asynccontextmanager
async def _followers(
    storage: Storage, queues: set[str], flow_id: str, changed: asyncio.Event
) -> AsyncIterator[None]:
    """One task per queue following its events, setting `changed` on each of the flow's."""

    async def follow(queue: str) -> None:
        async for event in storage.follow_events(queue, after=LATEST):
            if event.flow_id == flow_id:
                changed.set()

    tasks = {asyncio.create_task(follow(queue)) for queue in sorted(queues)}
    try:
        yield
    finally:
        # Cancelled again until they end: a driver may swallow one cancellation (redis-py
        # does, in a blocking XREAD) and go on following.
        while tasks:
            for task in tasks:
                task.cancel()
            _, tasks = await asyncio.wait(tasks, timeout=_CANCEL_AGAIN_S)


class SyncFlowHandle:
    """`FlowHandle` for synchronous code (`Flow.submit_sync`): each call runs on the loop that
    owns the app, as `SyncResult` does."""

    __slots__ = ("handle",)

    def __init__(self, handle: FlowHandle) -> None:
        self.handle = handle

    @property
    def flow_id(self) -> str:
        """The flow's id."""
        return self.handle.flow_id

    def status(self) -> FlowStatus:
        """See `FlowHandle.status`."""
        return self.handle.lifecycle.call_sync(self.handle.status)

    def wait(self, timeout: float | None = None) -> FlowStatus:
        """See `FlowHandle.wait`."""
        return self.handle.lifecycle.call_sync(self.handle.wait, timeout)

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """See `FlowHandle.result`."""
        return self.handle.lifecycle.call_sync(self.handle.result, timeout)

    def cancel(self) -> int:
        """See `FlowHandle.cancel`."""
        return self.handle.lifecycle.call_sync(self.handle.cancel)

    def __repr__(self) -> str:
        return f"SyncFlowHandle({self.flow_id!r})"
