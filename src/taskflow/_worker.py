"""`Worker`: claims messages in batches and runs them on M sub-worker slots.

One worker is a handful of loops around shared state:

* the **claimer** claims up to the free capacity in one backend call and hands the deliveries
  to idle slots (waking on push when idle, bounded by the next due time);
* **slots** (the sub-workers) run one task each: decode -> run -> build the outcome;
* the **flusher** stores outcomes and acks them in one `Broker.complete` call per batch;
* the **heartbeat** renews every held lease in one `Broker.extend` call and learns about
  cancellation and lost leases;
* the **reporter** batches progress and yielded values into `Storage.report`;
* the **deadline sweep** interrupts tasks that ran past their timeout (one timer for the worker,
  not a cancel scope per task).

The job path of one task is `_process`: decode -> check -> run -> outcome, each a named step.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import anyio.abc

from ._aio import first_of
from ._clock import Clock, SystemClock
from ._config import GlobalConfig
from ._context import TaskContext, WorkerState
from ._exceptions import LifecycleError, TaskTimeout, UnencodableResult
from ._executor import (
    TaskExecutor,
    encode_result,
    outcome_for_error,
    safe_str,
)
from ._lifecycle import AppLifecycle
from ._message import (
    Delivery,
    ErrorInfo,
    Lease,
    LeaseState,
    Outcome,
    OutcomeKind,
    ProgressUpdate,
    TaskMessage,
    decode_message,
    decode_value,
    encode_value,
)
from ._task import TaskDefinition
from .abc import Broker, Storage

if TYPE_CHECKING:
    from ._message import Progress

__all__ = ["Worker", "WorkerApp"]

logger = logging.getLogger("taskflow.worker")

_RETRY_PAUSE_S: Final = 0.5
_MAX_RETRY_PAUSE_S: Final = 10.0


class WorkerApp(Protocol):
    """What a worker uses of its app (a `QueueTasks`), so this module never imports the app."""

    config: GlobalConfig
    clock: Clock
    broker: Broker
    storage: Storage
    lifecycle: AppLifecycle

    @property
    def tasks(self) -> Mapping[str, TaskDefinition]:
        """Registered tasks by name."""
        ...


class _Slot:
    """One sub-worker: an asyncio task running deliveries one after another."""

    __slots__ = ("index", "run", "task")

    def __init__(self, index: int) -> None:
        self.index = index
        self.task: asyncio.Task[None] | None = None
        self.run: _Run | None = None


class _Run:
    """One claimed delivery, from claim until its outcome is stored (or its lease is lost)."""

    __slots__ = (
        "attempt",
        "cancel_requested",
        "delivery",
        "dirty",
        "interrupt_reason",
        "kind",
        "pending_yields",
        "progress",
        "slot",
        "task_id",
        "token",
        "worker",
        "yielded",
    )

    def __init__(self, worker: Worker, delivery: Delivery) -> None:
        self.worker = worker
        self.delivery = delivery
        self.task_id = delivery.task_id
        self.token = delivery.token
        self.attempt = delivery.attempt
        self.slot: _Slot | None = None
        self.kind = ""
        self.cancel_requested = False
        self.interrupt_reason: str | None = None
        self.progress: Progress | None = None
        self.yielded: list[Any] = []
        self.pending_yields: list[bytes] = []
        self.dirty = False

    def interrupt(self, reason: str) -> None:
        """Stop this run for `reason` (timeout, cancel, lost, shutdown); first reason wins.

        Async code is cancelled at once; a sync function in a thread cannot be interrupted, so
        it is only marked and its slot stays taken until it returns.
        """
        if self.interrupt_reason is not None:
            return
        self.interrupt_reason = reason
        slot = self.slot
        if slot is not None and slot.run is self and self.kind in ("async", "async_generator"):
            assert slot.task is not None
            slot.task.cancel()

    def set_progress(self, progress: Progress) -> None:
        self.progress = progress
        self.worker._mark_dirty(self)

    def add_yield(self, value: Any) -> None:
        try:
            encoded = encode_value(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnencodableResult(
                f"the task yielded a {type(value).__name__} that msgspec cannot encode ({exc})"
            ) from None
        self.yielded.append(value)
        self.pending_yields.append(encoded)
        self.worker._mark_dirty(self)


class Worker:
    """Claims tasks from `queues` and runs up to `concurrency` of them at once.

    Usually started by `QueueTasks.running()`, `QueueTasks.run_forever()` or the CLI; embed it
    directly with ``await task_group.start(worker.run)``, which returns once it is ready.
    """

    def __init__(
        self,
        app: WorkerApp,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        state: WorkerState | None = None,
        worker_id: str | None = None,
    ) -> None:
        config = app.config
        self.app = app
        self.concurrency = config.concurrency if concurrency is None else concurrency
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        self.queues: tuple[str, ...] = tuple(queues) if queues else (config.default_queue,)
        self.state = state if state is not None else WorkerState()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.processed = 0
        self.failed = 0
        self._config = config
        self._clock = app.clock
        self._ready: deque[_Run] = deque()
        self._runs: dict[str, _Run] = {}
        #: Moving average of how long a task holds its slot (s); None until one ran.
        self._run_s: float | None = None
        self._slots: list[_Slot] = []
        self._idle_slots: deque[asyncio.Future[None]] = deque()
        self._busy = 0
        self._capacity_waiter: asyncio.Future[None] | None = None
        self._pending: list[Outcome] = []
        self._flush_event = asyncio.Event()
        self._unwatched = False
        self._dirty: dict[str, _Run] = {}
        self._report_event = asyncio.Event()
        # One report at a time, so reports of a task land in order; `_reporting` holds the runs
        # of the one in flight, whose outcomes must wait for it (see `_flush`).
        self._report_lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()
        self._reporting: dict[str, _Run] = {}
        self._deadlines: list[tuple[float, int, _Run]] = []
        self._deadline_seq = itertools.count()
        self._deadline_event = asyncio.Event()
        self._stop_event = asyncio.Event()
        # The claimer's idle wait: one future, resolved by the work watcher, a timer or stop().
        self._idle_waiter: asyncio.Future[None] | None = None
        self._work_pending = False
        self._stopping = False
        self._started = False
        self._executor: TaskExecutor | None = None
        #: One line per task start and end, decided once at start: the job path pays nothing
        #: for it when DEBUG is off.
        self._debug = False

    # -- public ----------------------------------------------------------------------------

    @property
    def running_tasks(self) -> int:
        """Tasks being run right now."""
        return self._busy

    def stop(self) -> None:
        """Ask for a graceful stop: claim no more, let running tasks finish within
        `GlobalConfig.shutdown_grace_s`, then cancel and release the rest."""
        self._stopping = True
        self._stop_event.set()
        self._wake_claimer()
        # The claimer may be waiting for a free slot (all busy): the drain must not wait too.
        waiter = self._capacity_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[Worker] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until `stop()` (graceful) or cancellation (running tasks are released at once).

        Reports readiness through `task_status` (``await tg.start(worker.run)``).

        Opens the app on this event loop if it is not open here (a worker needs the backend
        like any other call), taking it over from a loop that has ended or from the private
        loop of blocking calls.

        Raises:
            LifecycleError: this worker already ran, or the app is open on an event loop still
                running in another thread (its backend connections belong to that loop).
        """
        if self._started:
            raise LifecycleError("a Worker runs once; create a new Worker to run again")
        await self.app.lifecycle.ensure_open()
        self._started = True
        self._executor = TaskExecutor(anyio.CapacityLimiter(self._config.thread_pool_size))
        loop = asyncio.get_running_loop()
        self._slots = [_Slot(i) for i in range(self.concurrency)]
        for slot in self._slots:
            slot.task = loop.create_task(self._slot_loop(slot), name=f"taskflow-slot-{slot.index}")
        self._debug = logger.isEnabledFor(logging.DEBUG)
        logger.info(
            "worker %s ready: backend=%s queues=%s concurrency=%d tasks=%s",
            self.worker_id,
            self.app.storage.describe(),
            ",".join(self.queues),
            self.concurrency,
            ",".join(sorted(self.app.tasks)) or "(none registered)",
        )
        try:
            async with anyio.create_task_group() as tg:
                self.app.broker.watch_work(
                    self.queues, worker_id=self.worker_id, callback=self._on_work
                )
                tg.start_soon(self._cleanup_loop)
                tg.start_soon(self._flush_loop)
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._report_loop)
                tg.start_soon(self._deadline_loop)
                task_status.started(self)
                await self._claim_loop()
                await self._unwatch()
                await self._drain()
                tg.cancel_scope.cancel()
        finally:
            await self._abort()
        logger.info("worker %s stopped: %d processed", self.worker_id, self.processed)

    # -- claiming --------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        broker = self.app.broker
        config = self._config
        pause = _RETRY_PAUSE_S
        while not self._stopping:
            free = self.concurrency + self._claim_ahead() - self._busy - len(self._ready)
            if free <= 0:
                await self._wait_capacity()
                continue
            self._work_pending = False
            limit = min(free, config.claim_batch)
            try:
                deliveries = await broker.claim(
                    self.queues,
                    limit=limit,
                    lease_s=config.lease_s,
                    now=self._clock.time(),
                    worker_id=self.worker_id,
                )
                pause = _RETRY_PAUSE_S
            except Exception:
                logger.exception("claim failed; retrying in %.1f s", pause)
                await self._sleep_or_stop(pause)
                pause = min(pause * 2, _MAX_RETRY_PAUSE_S)
                continue
            if deliveries:
                self._hand_out(deliveries)
                if len(deliveries) < limit:
                    # The queues ran dry: no second claim just to hear "empty" (a round trip
                    # on the latency path); anything enqueued since this claim began wakes us.
                    await self._wait_for_work()
            else:
                await self._wait_for_work()

    def _claim_ahead(self) -> int:
        """How many tasks to claim beyond the free slots: as many as the slots finish within
        `prefetch_wait_s` at the measured pace (an average of recent run times), at most one
        claim batch. None before the first task ran, none for long tasks."""
        pace = self._run_s
        wait = self._config.prefetch_wait_s
        if pace is None or wait <= 0:
            return 0
        return min(self._config.claim_batch, int(wait * self.concurrency / max(pace, 1e-6)))

    def _hand_out(self, deliveries: list[Delivery]) -> None:
        runs = self._runs
        ready = self._ready
        for delivery in deliveries:
            run = _Run(self, delivery)
            runs[delivery.task_id] = run
            ready.append(run)
        idle = self._idle_slots
        for _ in range(min(len(deliveries), len(idle))):
            fut = idle.popleft()
            if not fut.done():
                fut.set_result(None)

    async def _wait_capacity(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._capacity_waiter = fut
        try:
            await fut
        finally:
            self._capacity_waiter = None
        # Let the other slots that finish in this same turn free up too: claim once for many.
        await asyncio.sleep(0)

    async def _wait_for_work(self) -> None:
        """Idle: wait for pushed work, the next due time (bounded by idle_poll_s), or stop."""
        try:
            due = await self.app.broker.next_due(self.queues, now=self._clock.time())
        except Exception:
            logger.exception("next_due failed")
            due = None
        timeout = self._config.idle_poll_s
        if due is not None:
            # From the time the answer came back, not the time it was asked: on a server the
            # round trip would delay every due task by its length.
            timeout = min(timeout, max(0.0, due - self._clock.time()))
        if self._work_pending or self._stopping:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._idle_waiter = waiter
        timer: asyncio.TimerHandle | asyncio.Task[None] | None
        if isinstance(self._clock, SystemClock):
            timer = loop.call_later(timeout, self._wake_claimer)
        else:
            timer = loop.create_task(self._wake_after(timeout))
        try:
            await waiter
        finally:
            self._idle_waiter = None
            timer.cancel()

    async def _wake_after(self, seconds: float) -> None:
        await self._clock.sleep(seconds)
        self._wake_claimer()

    def _wake_claimer(self) -> None:
        waiter = self._idle_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_work(self) -> None:
        """`Broker.watch_work`'s callback: work may be claimable (remembered until the next
        claim begins, so a push between a claim and the idle wait is not lost)."""
        self._work_pending = True
        self._wake_claimer()

    async def _sleep_or_stop(self, seconds: float) -> None:
        await first_of(self._clock.sleep(seconds), self._stop_event.wait())

    # -- slots: the job path ---------------------------------------------------------------

    async def _slot_loop(self, slot: _Slot) -> None:
        ready = self._ready
        loop = asyncio.get_running_loop()
        debug = self._debug
        while True:
            if not ready:
                if self._stopping:
                    return
                fut: asyncio.Future[None] = loop.create_future()
                self._idle_slots.append(fut)
                await fut
                continue
            run = ready.popleft()
            self._busy += 1
            started = time.perf_counter()
            try:
                await self._process(slot, run)
            except Exception:
                # A bug in the job path must cost one task, never the slot (and with it the
                # task's lease, renewed forever by the heartbeat).
                logger.exception("task %s: the worker failed while handling it", run.task_id)
                self._fail_now(
                    run, "WorkerError", "the worker failed while handling this task; see its log"
                )
            finally:
                took = time.perf_counter() - started
                if debug:
                    self._log_end(run, took)
                pace = self._run_s
                self._run_s = took if pace is None else pace + 0.1 * (took - pace)
                self._busy -= 1
                waiter = self._capacity_waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def _process(self, slot: _Slot, run: _Run) -> None:
        """decode -> check -> run -> outcome."""
        now = self._clock.time()
        message = self._decode(run)
        if message is None:
            return
        if run.interrupt_reason is not None:  # cancelled or lost while waiting for a slot
            self._finish_interrupted(run, message, None)
            return
        definition = self.app.tasks.get(message.name)
        if definition is None:
            self._finish(self._unknown_task(run, message, now))
            return
        if message.expires_at is not None and message.expires_at <= now:
            self._finish(self._expired(run, message, now))
            return
        args = self._decode_arguments(run, message, definition)
        if args is None:
            return
        await self._run_task(slot, run, message, definition, args[0], args[1])

    def _decode(self, run: _Run) -> TaskMessage | None:
        try:
            return decode_message(run.delivery.data)
        except Exception as exc:
            self._fail_now(run, "UndecodableMessage", f"the message could not be decoded: {exc}")
            return None

    def _decode_arguments(
        self, run: _Run, message: TaskMessage, definition: TaskDefinition
    ) -> tuple[list[Any], dict[str, Any]] | None:
        try:
            payload = decode_value(message.payload)
            if not (isinstance(payload, list) and len(payload) == 2):
                raise TypeError(f"payload must be [args, kwargs], got {payload!r:.80}")
            args, kwargs = payload
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise TypeError("payload must be [args, kwargs]")
        except Exception as exc:
            self._fail_now(
                run,
                "UndecodablePayload",
                f"the arguments of {message.name!r} could not be decoded: {exc}",
            )
            return None
        if definition.context_param is not None:
            ctx = TaskContext(
                run,
                task_id=run.task_id,
                name=message.name,
                queue=message.queue,
                attempt=run.attempt,
                headers=message.headers,
                state=self.state,
            )
            index = definition.context_index
            if index is not None and index <= len(args):
                args.insert(index, ctx)
            else:
                kwargs[definition.context_param] = ctx
        return args, kwargs

    async def _run_task(
        self,
        slot: _Slot,
        run: _Run,
        message: TaskMessage,
        definition: TaskDefinition,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> None:
        assert self._executor is not None
        if self._debug:
            logger.debug("task %s (%s) attempt %d started", run.task_id, message.name, run.attempt)
        run.kind = definition.kind
        if message.timeout_s is not None:
            self._add_deadline(run, self._clock.time() + message.timeout_s)
        run.slot = slot
        slot.run = run
        try:
            value = await self._executor.execute(definition, args, kwargs, run)
        except asyncio.CancelledError:
            if run.interrupt_reason is None:
                raise  # the worker itself is being cancelled
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._finish_interrupted(run, message, definition)
        except Exception as exc:
            if run.interrupt_reason is not None:
                self._finish_interrupted(run, message, definition)
            else:
                self._finish_error(run, message, definition, exc)
        else:
            if run.interrupt_reason is not None and run.interrupt_reason != "cancel":
                self._finish_interrupted(run, message, definition)
            else:
                self._finish_value(run, message, definition, value)
        finally:
            slot.run = None
            run.slot = None
            if run.interrupt_reason is not None:
                _forget_interrupt_cancel(run)

    def _log_end(self, run: _Run, took: float) -> None:
        """DEBUG: how the run that just left its slot ended. `_process` hands its outcome to
        `_finish` synchronously just before it returns, so the outcome is still pending (a
        run with none was dropped: its lease was lost)."""
        outcome = next((o for o in reversed(self._pending) if o.task_id == run.task_id), None)
        try:
            name = decode_message(run.delivery.data).name
        except Exception:
            name = "?"
        logger.debug(
            "task %s (%s) attempt %d ended in %.3f s: %s",
            run.task_id,
            name,
            run.attempt,
            took,
            "lost" if outcome is None else outcome.kind.value,
        )

    # -- outcomes --------------------------------------------------------------------------

    def _result_expiry(self, now: float) -> float:
        return now + self._config.result_ttl_s

    def _finish_value(
        self, run: _Run, message: TaskMessage, definition: TaskDefinition, value: Any
    ) -> None:
        now = self._clock.time()
        result: bytes | None = None
        if message.store_result:
            try:
                result = encode_result(value)
            except UnencodableResult as exc:
                self._finish_error(run, message, definition, exc)
                return
        self.processed += 1
        self._finish(
            Outcome(
                run.task_id,
                run.token,
                OutcomeKind.DONE,
                result=result,
                result_expires_at=self._result_expiry(now),
            )
        )

    def _finish_error(
        self,
        run: _Run,
        message: TaskMessage,
        definition: TaskDefinition | None,
        exc: BaseException,
    ) -> None:
        now = self._clock.time()
        outcome = outcome_for_error(
            definition,
            message,
            run,
            exc,
            now,
            self._config.max_retry_backoff_s,
            self._result_expiry(now),
        )
        if outcome.kind is OutcomeKind.FAILED:
            self.failed += 1
            logger.warning(
                "task %s (%s) failed for good on attempt %d: %s: %s",
                run.task_id,
                message.name,
                run.attempt,
                type(exc).__name__,
                safe_str(exc),
            )
        else:
            logger.info(
                "task %s (%s) attempt %d failed, retrying: %s: %s",
                run.task_id,
                message.name,
                run.attempt,
                type(exc).__name__,
                safe_str(exc),
            )
        self._finish(outcome)

    def _finish_interrupted(
        self, run: _Run, message: TaskMessage, definition: TaskDefinition | None
    ) -> None:
        reason = run.interrupt_reason
        now = self._clock.time()
        if reason == "lost":
            # Someone else holds the task now; anything we wrote would be refused.
            self._drop(run)
        elif reason == "cancel":
            self._finish(
                Outcome(
                    run.task_id,
                    run.token,
                    OutcomeKind.CANCELLED,
                    error=ErrorInfo("Cancelled", "cancelled on request"),
                    result_expires_at=self._result_expiry(now),
                )
            )
        elif reason == "timeout":
            exc = TaskTimeout(f"task ran longer than its timeout of {message.timeout_s} s")
            self._finish_error(run, message, definition, exc)
        else:  # shutdown: give it back for immediate redelivery, attempt refunded
            self._finish(Outcome(run.task_id, run.token, OutcomeKind.RELEASE))

    def _unknown_task(self, run: _Run, message: TaskMessage, now: float) -> Outcome:
        config = self._config
        shared = self.app.storage.shared_across_processes
        known = ", ".join(sorted(self.app.tasks)) or "none"
        if shared and now - message.created_at < config.unknown_task_window_s:
            logger.warning(
                "task %s names %r, which this worker does not know; putting it back for %.0f s",
                run.task_id,
                message.name,
                config.unknown_task_retry_s,
            )
            return Outcome(
                run.task_id,
                run.token,
                OutcomeKind.RELEASE,
                retry_at=now + config.unknown_task_retry_s,
            )
        error = ErrorInfo(
            "UnknownTask",
            f"no task named {message.name!r} is registered (known: {known}); register it with "
            "@app.task on the workers, or fix the name",
        )
        self.failed += 1
        return Outcome(
            run.task_id,
            run.token,
            OutcomeKind.FAILED,
            error=error,
            result_expires_at=self._result_expiry(now),
        )

    def _expired(self, run: _Run, message: TaskMessage, now: float) -> Outcome:
        error = ErrorInfo(
            "TaskExpired",
            f"not started before it expired at {message.expires_at} (now {now}); it was not run",
        )
        return Outcome(
            run.task_id,
            run.token,
            OutcomeKind.EXPIRED,
            error=error,
            result_expires_at=self._result_expiry(now),
        )

    def _fail_now(self, run: _Run, error_type: str, text: str) -> None:
        logger.error("task %s: %s", run.task_id, text)
        self.failed += 1
        self._finish(
            Outcome(
                run.task_id,
                run.token,
                OutcomeKind.FAILED,
                error=ErrorInfo(error_type, text),
                result_expires_at=self._result_expiry(self._clock.time()),
            )
        )

    def _finish(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        if not self._flush_event.is_set():
            self._flush_event.set()

    def _drop(self, run: _Run) -> None:
        self._runs.pop(run.task_id, None)
        self._dirty.pop(run.task_id, None)

    # -- flushing outcomes -----------------------------------------------------------------

    async def _flush_loop(self) -> None:
        event = self._flush_event
        while True:
            await event.wait()
            event.clear()
            await self._flush()

    async def _flush(self) -> None:
        """Store and ack every pending outcome; on a backend error keep them and retry.

        One flush at a time: the drain's final flush waits for the flusher's batch in flight
        instead of finding nothing pending and letting the stop cancel that batch.
        """
        async with self._flush_lock:
            pause = _RETRY_PAUSE_S
            while self._pending:
                batch = self._pending
                self._pending = []
                try:
                    if self._dirty or self._reporting_any(batch):
                        # A report must land before its task's outcome: once the task has
                        # ended, the backend refuses it (on a pool the two calls would race).
                        await self._report()
                    await self.app.broker.complete(batch, now=self._clock.time())
                except Exception:
                    logger.exception(
                        "storing %d outcome(s) failed; retrying in %.1f s", len(batch), pause
                    )
                    self._pending[:0] = batch
                    await anyio.sleep(pause)
                    pause = min(pause * 2, _MAX_RETRY_PAUSE_S)
                    continue
                except BaseException:
                    self._pending[:0] = batch  # cancelled: `_abort` stores them on the way out
                    raise
                runs = self._runs
                for outcome in batch:
                    runs.pop(outcome.task_id, None)

    # -- heartbeat: lease renewal, cancellation, lost leases --------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._clock.sleep(self._config.heartbeat_s)
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        runs = list(self._runs.values())
        if not runs:
            return
        leases = [Lease(run.task_id, run.token) for run in runs]
        try:
            states = await self.app.broker.extend(
                leases, lease_s=self._config.lease_s, now=self._clock.time()
            )
        except Exception:
            logger.exception("renewing %d lease(s) failed; will retry next heartbeat", len(leases))
            return
        for run, state in zip(runs, states, strict=True):
            if state is LeaseState.CANCEL:
                run.cancel_requested = True
                run.interrupt("cancel")
            elif state is LeaseState.LOST:
                logger.warning("lease of task %s was lost; abandoning this run", run.task_id)
                run.interrupt("lost")
                if run.slot is None and run not in self._ready:
                    self._drop(run)

    # -- progress and yields ---------------------------------------------------------------

    def _mark_dirty(self, run: _Run) -> None:
        if not run.dirty:
            run.dirty = True
            self._dirty[run.task_id] = run
            self._report_event.set()

    async def _report_loop(self) -> None:
        event = self._report_event
        while True:
            await event.wait()
            event.clear()
            await self._report()

    async def _report(self) -> None:
        """Send what changed since the last report; waits for a report already in flight."""
        async with self._report_lock:
            dirty = self._dirty
            if not dirty:
                return
            self._dirty = {}
            self._reporting = dirty
            updates = []
            for run in dirty.values():
                run.dirty = False
                updates.append(
                    ProgressUpdate(run.task_id, run.token, run.progress, run.pending_yields)
                )
                run.pending_yields = []
            try:
                await self.app.storage.report(updates, now=self._clock.time())
            except Exception:
                logger.exception("reporting progress of %d task(s) failed", len(updates))
            finally:
                self._reporting = {}

    def _reporting_any(self, outcomes: list[Outcome]) -> bool:
        """Whether the report in flight carries progress of one of `outcomes`' tasks."""
        reporting = self._reporting
        return bool(reporting) and any(o.task_id in reporting for o in outcomes)

    # -- housekeeping ----------------------------------------------------------------------

    async def _cleanup_loop(self) -> None:
        """Delete records whose result expired more than a result TTL ago, now and then.

        Expired results are hidden at once (`ResultExpired`); this frees their tombstones."""
        config = self._config
        while True:
            await self._clock.sleep(config.cleanup_interval_s)
            try:
                deleted = await self.app.storage.cleanup(
                    now=self._clock.time(), keep_s=config.result_ttl_s
                )
            except Exception:
                logger.exception(
                    "cleanup failed; will try again in %.0f s", config.cleanup_interval_s
                )
                continue
            if deleted:
                logger.info("cleanup deleted %d expired task record(s)", deleted)

    # -- deadlines -------------------------------------------------------------------------

    def _add_deadline(self, run: _Run, deadline: float) -> None:
        heap = self._deadlines
        earliest = heap[0][0] if heap else None
        heapq.heappush(heap, (deadline, next(self._deadline_seq), run))
        if earliest is None or deadline < earliest:
            self._deadline_event.set()

    async def _deadline_loop(self) -> None:
        heap = self._deadlines
        while True:
            self._deadline_event.clear()
            now = self._clock.time()
            while heap and heap[0][0] <= now:
                _, _, run = heapq.heappop(heap)
                if run.slot is not None:
                    logger.warning("task %s exceeded its timeout; interrupting it", run.task_id)
                    run.interrupt("timeout")
            if heap:
                await first_of(self._clock.sleep(heap[0][0] - now), self._deadline_event.wait())
            else:
                await self._deadline_event.wait()

    # -- shutdown --------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Graceful part of a stop: release unstarted work, give running tasks the grace
        period, then interrupt the rest (released for immediate redelivery)."""
        while self._ready:
            run = self._ready.popleft()
            self._finish(Outcome(run.task_id, run.token, OutcomeKind.RELEASE))
        for fut in self._idle_slots:
            if not fut.done():
                fut.set_result(None)
        if self._busy:
            logger.info(
                "waiting up to %.1f s for %d running task(s)",
                self._config.shutdown_grace_s,
                self._busy,
            )
            await first_of(self._all_slots_done(), self._clock.sleep(self._config.shutdown_grace_s))
        for slot in self._slots:
            if slot.run is not None:
                slot.run.interrupt("shutdown")
                if slot.run.kind in ("sync", "generator"):
                    # A thread cannot be stopped: release now, the late outcome will be refused.
                    self._finish(Outcome(slot.run.task_id, slot.run.token, OutcomeKind.RELEASE))
        await self._all_slots_done(skip_threads=True)
        await self._flush()

    async def _all_slots_done(self, skip_threads: bool = False) -> None:
        tasks = [
            slot.task
            for slot in self._slots
            if slot.task is not None
            and not (
                skip_threads and slot.run is not None and slot.run.kind in ("sync", "generator")
            )
        ]
        if tasks:
            await asyncio.wait(tasks)

    async def _unwatch(self) -> None:
        """Tell the broker this worker claims no more (it gives back hand-offs not taken)."""
        if self._unwatched or not self.app.broker.is_open:
            return
        self._unwatched = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self.app.broker.unwatch_work(
                    self.queues, worker_id=self.worker_id, now=self._clock.time()
                )
            except Exception:
                logger.exception(
                    "could not stop watching for work; hand-offs not taken yet "
                    "are re-delivered when their leases lapse"
                )

    async def _abort(self) -> None:
        """Cleanup on any exit: cancel the slots; on cancellation, release what we hold."""
        await self._unwatch()
        for slot in self._slots:
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()
        held = [Outcome(run.task_id, run.token, OutcomeKind.RELEASE) for run in self._runs.values()]
        if not held or not self.app.broker.is_open:
            return
        pending_ids = {o.task_id for o in self._pending}
        outcomes = self._pending + [o for o in held if o.task_id not in pending_ids]
        self._pending = []
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self.app.broker.complete(outcomes, now=self._clock.time())
            except Exception:
                logger.exception(
                    "could not release %d task(s) on exit; their leases will lapse", len(outcomes)
                )
        self._runs.clear()


def _forget_interrupt_cancel(run: _Run) -> None:
    """Undo the ``Task.cancel()`` of `_Run.interrupt` when no CancelledError ended the run (the
    task caught it and returned or raised), so the next task on this slot does not start with
    a stale cancellation request that asyncio.timeout / TaskGroup would count."""
    task = asyncio.current_task()
    if run.kind in ("async", "async_generator") and task is not None and task.cancelling():
        task.uncancel()
