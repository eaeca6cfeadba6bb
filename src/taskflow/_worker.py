"""`Worker`: claims messages in batches and runs them on M sub-workers (slots).

One worker is a handful of loops around shared state:

* the **claimer** claims up to the free capacity in one backend call and hands the deliveries
  to idle slots (waking on push when idle, bounded by the next due time);
* **slots** (the sub-workers) run one task each: decode -> check -> run -> outcome;
* the **heartbeat** renews every held lease in one `Broker.extend` call and learns about
  cancellation and lost leases; with it the worker rewrites its registry entry (`_registry.py`);
* the **recorder** (`_recorder.py`) batches progress and yields into `Storage.report` and
  stores and acks outcomes in one `Broker.complete` call per batch;
* the **deadline sweep** (`_deadlines.py`) interrupts tasks that ran past their timeout;
* **hedging** (`_hedging.py`) starts a copy of a hedged run that straggles, once per
  heartbeat period, and shares run times with the other workers;
* **housekeeping** deletes long-expired task records (`_cleanup_loop`) and expires artifacts
  (`_artifact_sweep.py`), now and then, in every worker;
* the **lock gate** (`_lock_gate.py`) takes the locks a task declares before its run takes a
  slot (parking the task in the broker while they are taken), renews them with the leases and
  releases them when the run ends.

The job path of one task is `_process`: decode -> check -> run (`_executor.py`) -> outcome
(decided in `_outcome.py`) -> recorded. The state of one claimed task is a `Run` (`_run.py`).
The worker sees its app as a `WorkerApp`, so this module never imports the app.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import anyio
import anyio.abc

from ._aio import first_of
from ._artifact_sweep import ArtifactSweep
from ._artifacts import ArtifactKeeper, TaskArtifacts
from ._checkpoints import RunCheckpoints
from ._claimer import Claimer
from ._clock import Clock
from ._config import GlobalConfig
from ._context import TaskContext, WorkerState
from ._deadlines import DeadlineSweep
from ._exceptions import LifecycleError, LockLost
from ._executor import TaskExecutor
from ._fan_out import BUILTIN_TASKS, FanOut
from ._flow import FlowSender
from ._flow_inputs import InputsUnavailable, input_ids, read_inputs
from ._hedging import Hedging
from ._lifecycle import AppLifecycle
from ._lock_gate import LockGate
from ._message import (
    Delivery,
    Lease,
    LeaseState,
    LockHold,
    LockMode,
    Outcome,
    OutcomeKind,
    TaskMessage,
    decode_message,
    decode_value,
)
from ._outcome import OutcomeDecision, release, runs_logger
from ._recorder import Recorder
from ._registry import RegistryEntry
from ._run import ASYNC_KINDS, Run
from ._task import TaskDefinition
from .abc import Broker, Coordination, Storage

__all__ = ["Worker", "WorkerApp"]

logger = logging.getLogger("taskflow.worker")


class WorkerApp(Protocol):
    """What a worker uses of its app (a `QueueTasks`), so this module never imports the app."""

    config: GlobalConfig
    clock: Clock
    broker: Broker
    storage: Storage
    coordination: Coordination
    lifecycle: AppLifecycle
    artifact_keeper: ArtifactKeeper

    @property
    def sender(self) -> FlowSender:
        """Builds the messages of the tasks a run sends (``ctx.fan_out``)."""
        ...

    @property
    def leading(self) -> frozenset[str]:
        """The roles this app leads now, reported in the worker registry."""
        ...

    @property
    def tasks(self) -> Mapping[str, TaskDefinition]:
        """Registered tasks by name."""
        ...


class _Slot:
    """One sub-worker: an asyncio task running deliveries one after another (the only meaning
    of "slot" in the core)."""

    __slots__ = ("index", "run", "task")

    def __init__(self, index: int) -> None:
        self.index = index
        self.task: asyncio.Task[None] | None = None
        self.run: Run | None = None


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
        self._ready: deque[Run] = deque()
        self._runs: dict[str, Run] = {}
        self._slots: list[_Slot] = []
        self._idle_slots: deque[asyncio.Future[None]] = deque()
        self._busy = 0
        self._recorder = Recorder(app.broker, app.storage, app.clock, self._runs)
        self._decide = OutcomeDecision(config, app.clock)
        self._deadlines = DeadlineSweep(app.clock)
        self._artifact_sweep = ArtifactSweep(app.artifact_keeper, config.cleanup_interval_s)
        self._unwatched = False
        self._gate = LockGate(
            app.broker,
            app.clock,
            config,
            admit=self._admit,
            parked=self._parked,
            settle=self._recorder.finish,
            on_lost=self._lock_lost,
        )
        self._claimer = Claimer(
            app.broker,
            self.queues,
            self.worker_id,
            self.concurrency,
            config,
            app.clock,
            occupied=self._occupied,
            hand_out=self._hand_out,
        )
        self._registry = RegistryEntry(
            app.coordination,
            app.clock,
            worker_id=self.worker_id,
            queues=self.queues,
            concurrency=self.concurrency,
            lease_s=config.lease_s,
            counters=self._counters,
            roles=lambda: app.leading,
        )
        self._hedging = Hedging(
            app.broker,
            app.coordination,
            app.clock,
            worker_id=self.worker_id,
            runs=self._runs,
            period_s=config.heartbeat_s,
        )
        self._stopping = False
        #: When the grace period of a stop ends (`stop` sets it).
        self._grace_ends_at = 0.0
        self._started = False
        self._executor: TaskExecutor | None = None
        self._tasks: Mapping[str, TaskDefinition] = app.tasks
        #: One line per task start (INFO) and end (DEBUG) on ``taskflow.worker.runs``, decided
        #: once at start: the job path pays nothing for a line that is off.
        self._log_starts = False
        self._debug = False

    # -- public ----------------------------------------------------------------------------

    @property
    def running_tasks(self) -> int:
        """Tasks being run right now."""
        return self._busy

    def _counters(self) -> tuple[int, int, int]:
        """(processed, failed, running), for the registry entry."""
        return self.processed, self.failed, self._busy

    def stop(self) -> None:
        """Ask for a graceful stop: claim no more, let running tasks finish within
        `GlobalConfig.shutdown_grace_s`, then cancel and release the rest.

        The grace period starts now, whatever the claimer is in the middle of (waiting for a
        free slot, a claim in flight) and however long it takes to return; no task starts
        after this call."""
        if not self._stopping:
            self._stopping = True
            self._grace_ends_at = self._clock.time() + self._config.shutdown_grace_s
        # The claimer may be waiting for a free slot (all busy): the drain must not wait too.
        self._claimer.stop()

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
        self._log_starts = runs_logger.isEnabledFor(logging.INFO)
        self._debug = runs_logger.isEnabledFor(logging.DEBUG)
        await self._registry.write()
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
                    self.queues, worker_id=self.worker_id, callback=self._claimer.on_work
                )
                tg.start_soon(self._cleanup_loop)
                tg.start_soon(self._artifact_sweep.loop)
                tg.start_soon(self._recorder.flush_loop)
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._recorder.report_loop)
                tg.start_soon(self._deadlines.loop)
                tg.start_soon(self._gate.loop)
                tg.start_soon(self._hedging.loop)
                task_status.started(self)
                await self._claimer.loop()
                await self._unwatch()
                await self._drain()
                tg.cancel_scope.cancel()
        finally:
            await self._abort()
        logger.info("worker %s stopped: %d processed", self.worker_id, self.processed)

    # -- claiming: the claimer (`_claimer.py`) hands deliveries out here -----------------------

    def _occupied(self) -> int:
        return self._busy + len(self._ready) + self._gate.occupied

    def _hand_out(self, deliveries: list[Delivery]) -> None:
        runs = self._runs
        ready = self._ready
        gate = self._gate
        on_report = self._recorder.mark_dirty
        for delivery in deliveries:
            run = Run(delivery, on_report)
            runs[delivery.task_id] = run
            message = _decoded(run)
            if message is not None and message.locks:
                gate.submit(run, message)  # to a slot once its locks are held (`_admit`)
            else:
                ready.append(run)
        self._wake_slots(len(deliveries))

    def _wake_slots(self, n: int) -> None:
        """Wake up to `n` idle slots: that many runs were added to `ready`."""
        idle = self._idle_slots
        for _ in range(min(n, len(idle))):
            fut = idle.popleft()
            if not fut.done():
                fut.set_result(None)

    # -- declared locks: the lock gate (`_lock_gate.py`) calls back here -----------------------

    def _admit(self, run: Run) -> None:
        """`run` holds its declared locks: on to a slot (or given back, if stopping)."""
        if self._stopping:
            self._finish(release(run))
            return
        self._ready.append(run)
        self._wake_slots(1)

    def _parked(self, run: Run) -> None:
        """`run` waits in the broker for its locks (its RELEASE is stored): let go of it."""
        self._runs.pop(run.task_id, None)
        self._recorder.forget(run)
        self._claimer.capacity_freed()

    def _lock_lost(self, hold: LockHold, mode: LockMode) -> None:
        """A renewal found `hold` lost: stop its run, which fails with `LockLost`."""
        run = self._runs.get(hold.owner)
        if run is not None and not run.ending:
            run.lost_lock = LockLost(
                hold.name,
                mode,
                hold.token,
                "it was not renewed in time (the worker was paused or cut off from the backend "
                "for longer than lease_s) and lapsed; the task's run was stopped",
            )
            run.interrupt("lock")

    # -- slots: the job path ---------------------------------------------------------------

    async def _slot_loop(self, slot: _Slot) -> None:
        ready = self._ready
        loop = asyncio.get_running_loop()
        debug = self._debug
        while True:
            if self._stopping:
                return  # what waits in `ready` is released by the drain, not started
            if not ready:
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
                self._finish(
                    self._decide.failure(
                        run,
                        "WorkerError",
                        "the worker failed while handling this task; see its log",
                    )
                )
            finally:
                took = time.perf_counter() - started
                if debug:
                    self._log_end(run, took)
                self._busy -= 1
                self._claimer.slot_freed(took)

    async def _process(self, slot: _Slot, run: Run) -> None:
        """decode -> check -> run -> outcome."""
        now = self._clock.time()
        message = self._decode(run)
        if message is None:
            return
        if run.interrupt_reason is None and run.lease_until <= now:
            # It waited for a slot past its lease (this process was paused, or its heartbeat
            # could not reach the backend): another worker may run it, or have run it, by now.
            logger.warning(
                "task %s: its lease lapsed before it could start; leaving it to the next claim",
                run.task_id,
            )
            run.interrupt("lost")
        if run.interrupt_reason is not None:  # cancelled or lost while waiting for a slot
            self._settle(run, self._decide.of_interruption(run, message, None))
            return
        given_back = self._hedging.give_back(run, message)
        if given_back is not None:
            self._finish(given_back)
            return
        tasks = self._tasks
        definition = tasks.get(message.name) or BUILTIN_TASKS.get(message.name)
        if definition is None:
            shared = self.app.storage.shared_across_processes
            self._finish(self._decide.of_unknown_task(run, message, tasks, shared=shared))
            return
        if message.expires_at is not None and message.expires_at <= now:
            self._finish(self._decide.of_expiry(run, message))
            return
        arguments = self._decode_arguments(run, message, definition)
        if arguments is None:
            return
        args, kwargs = arguments
        if message.inputs and not await self._add_inputs(run, message, kwargs):
            return
        await self._run_task(slot, run, message, definition, args, kwargs)

    async def _add_inputs(self, run: Run, message: TaskMessage, kwargs: dict[str, Any]) -> bool:
        """Put a flow node's inputs (its parents' results, one batched read) into `kwargs`;
        False if they cannot be read (the run then fails, naming the parent)."""
        ids = input_ids(message.inputs)
        records = await self.app.storage.get_many(ids, now=self._clock.time())
        try:
            kwargs.update(read_inputs(message.inputs, records))
        except InputsUnavailable as exc:
            self._finish(self._decide.failure(run, "InputsUnavailable", str(exc)))
            return False
        return True

    def _decode(self, run: Run) -> TaskMessage | None:
        if run.message is not None:
            return run.message
        try:
            return decode_message(run.delivery.data)
        except Exception as exc:
            text = f"the message could not be decoded: {exc}"
            self._finish(self._decide.failure(run, "UndecodableMessage", text))
            return None

    def _decode_arguments(
        self, run: Run, message: TaskMessage, definition: TaskDefinition
    ) -> tuple[list[Any], dict[str, Any]] | None:
        try:
            payload = decode_value(message.payload)
            if not (isinstance(payload, list) and len(payload) == 2):
                raise TypeError(f"payload must be [args, kwargs], got {payload!r:.80}")
            args, kwargs = payload
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise TypeError("payload must be [args, kwargs]")
        except Exception as exc:
            text = f"the arguments of {message.name!r} could not be decoded: {exc}"
            self._finish(self._decide.failure(run, "UndecodablePayload", text))
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
                artifacts=TaskArtifacts(
                    self.app.artifact_keeper, run.task_id, definition.artifacts
                ),
                checkpoints=RunCheckpoints(self.app.storage, self._clock, run),
                fan_out=FanOut(self.app.sender, self.app.broker, self._clock, message, run),
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
        run: Run,
        message: TaskMessage,
        definition: TaskDefinition,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> None:
        if self._log_starts:
            runs_logger.info(
                "task %s (%s) attempt %d started", run.task_id, message.name, run.attempt
            )
        run.kind = definition.kind
        if message.timeout_s is not None:
            self._deadlines.add(run, self._clock.time() + message.timeout_s)
        run.task = slot.task
        slot.run = run
        self._hedging.started(run, message)
        assert self._executor is not None
        decide = self._decide
        try:
            value = await self._executor.execute(definition, args, kwargs, run)
        except asyncio.CancelledError:
            if run.interrupt_reason is None:
                raise  # the worker itself is being cancelled
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            outcome = decide.of_interruption(run, message, definition)
        except Exception as exc:
            outcome = decide.of_raised(run, message, definition, exc)
        else:
            outcome = decide.of_returned(run, message, definition, value)
        finally:
            slot.run = None
            run.task = None
            if run.interrupt_reason is not None:
                run.forget_interrupt_cancel()
        self._hedging.ended(run, outcome)
        self._settle(run, outcome)

    def _log_end(self, run: Run, took: float) -> None:
        """DEBUG: how the run that just left its slot ended. `_process` hands its outcome to
        `_finish` synchronously just before it returns, so the outcome is still pending (a
        run with none was dropped: its lease was lost)."""
        pending = self._recorder.pending
        outcome = next((o for o in reversed(pending) if o.task_id == run.task_id), None)
        try:
            name = decode_message(run.delivery.data).name
        except Exception:
            name = "?"
        runs_logger.debug(
            "task %s (%s) attempt %d ended in %.3f s: %s",
            run.task_id,
            name,
            run.attempt,
            took,
            "lost" if outcome is None else outcome.kind.value,
        )

    # -- outcomes: decided in `_outcome.py`, stored by the recorder --------------------------

    def _finish(self, outcome: Outcome) -> None:
        self._gate.ended(outcome.task_id)
        kind = outcome.kind
        if kind is OutcomeKind.DONE:
            self.processed += 1
        elif kind is OutcomeKind.FAILED:
            self.failed += 1
        self._recorder.finish(outcome)

    def _settle(self, run: Run, outcome: Outcome | None) -> None:
        """Store the outcome of `run`, or drop the run when it has none (its lease was lost:
        someone else holds the task now, and anything written would be refused)."""
        if outcome is None:
            self._drop(run)
        else:
            self._finish(outcome)

    def _drop(self, run: Run) -> None:
        self._gate.ended(run.task_id)
        self._runs.pop(run.task_id, None)
        self._recorder.forget(run)

    # -- heartbeat: lease renewal, cancellation, lost leases --------------------------------

    async def _heartbeat_loop(self) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                await self._clock.sleep(self._config.heartbeat_s)
                # Beside the renewal, never before it: a slow registry write (a server that
                # retries) must not make a lease late. One write at a time.
                if not self._registry.writing:
                    tg.start_soon(self._registry.write)
                await self._heartbeat()

    async def _heartbeat(self) -> None:
        """Renew every held lease in one call. The leases of runs whose outcome is on its way
        are renewed too (they keep the task while a failed store is retried), but what the
        renewal says of them is ignored: the outcome may land before the renewal does, which
        then finds the task ended and answers "lost" for a run that ended normally."""
        runs = list(self._runs.values())
        if not runs:
            return
        leases = [Lease(run.task_id, run.token) for run in runs]
        lease_s = self._config.lease_s
        sent_at = self._clock.time()
        try:
            states, _ = await asyncio.gather(
                self.app.broker.extend(leases, lease_s=lease_s, now=sent_at),
                self._gate.renew(sent_at),
            )
        except Exception:
            logger.exception("renewing %d lease(s) failed; will retry next heartbeat", len(leases))
            return
        for run, state in zip(runs, states, strict=True):
            if run.ending:
                continue
            if state is not LeaseState.LOST:
                run.lease_until = sent_at + lease_s
            if state is LeaseState.CANCEL:
                run.cancel_requested = True
                run.interrupt("cancel")
            elif state is LeaseState.LOST:
                logger.warning("lease of task %s was lost; abandoning this run", run.task_id)
                run.interrupt("lost")
                if not run.started and run not in self._ready:
                    self._drop(run)

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

    # -- shutdown --------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Graceful part of a stop: release unstarted work, give running tasks what is left of
        the grace period (it began at `stop`), then interrupt the rest (released for immediate
        redelivery)."""
        while self._ready:
            run = self._ready.popleft()
            self._finish(release(run))
        for run in self._gate.take_waiting():
            self._finish(release(run))
        for fut in self._idle_slots:
            if not fut.done():
                fut.set_result(None)
        if self._busy:
            grace_left = max(0.0, self._grace_ends_at - self._clock.time())
            logger.info("waiting up to %.1f s for %d running task(s)", grace_left, self._busy)
            await first_of(self._all_slots_done(), self._clock.sleep(grace_left))
        for slot in self._slots:
            if slot.run is not None:
                slot.run.interrupt("shutdown")
                if slot.run.kind not in ASYNC_KINDS:
                    # A thread cannot be stopped: release now, the late outcome will be refused.
                    self._finish(release(slot.run))
        await self._all_slots_done(skip_threads=True)
        await self._recorder.flush()
        await self._release_locks()

    async def _release_locks(self) -> None:
        """Release every declared lock still held, waking who it is granted to (a stop)."""
        if not self.app.broker.is_open:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self._gate.release_all()
            except Exception:
                logger.exception("could not release the locks held on exit; they will lapse")

    async def _all_slots_done(self, skip_threads: bool = False) -> None:
        tasks = [
            slot.task
            for slot in self._slots
            if slot.task is not None
            and not (skip_threads and slot.run is not None and slot.run.kind not in ASYNC_KINDS)
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
        """Cleanup on any exit: cancel the slots; on cancellation, release what we hold;
        leave the worker registry."""
        await self._unwatch()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self._registry.remove()
        for slot in self._slots:
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()
        held = [release(run) for run in self._runs.values()]
        await self._release_locks()
        self._gate.stop_checks()
        if not held or not self.app.broker.is_open:
            return
        pending = self._recorder.take_pending()
        pending_ids = {o.task_id for o in pending}
        outcomes = pending + [o for o in held if o.task_id not in pending_ids]
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self.app.broker.complete(outcomes, now=self._clock.time())
            except Exception:
                logger.exception(
                    "could not release %d task(s) on exit; their leases will lapse", len(outcomes)
                )
        self._runs.clear()


def _decoded(run: Run) -> TaskMessage | None:
    """The run's message, decoded once and kept on it; None if it cannot be decoded (the
    slot then fails it, see `Worker._decode`)."""
    try:
        run.message = decode_message(run.delivery.data)
    except Exception:
        return None
    return run.message
