"""A steady workload on real worker processes while a fault is injected, and the invariants.

`FaultRun` writes a small app (`APP`) into a temporary directory, starts two ``taskflow worker``
processes on it (20 slots each), and sends `FaultRun.tasks` tasks in batches while they work.
Each body run appends one line (task id, attempt, pid, wall time) to a shared log with one
``O_APPEND`` write, so every run is counted, killed or not. A test injects its fault once a
part of the work has run, then `FaultRun.finish` waits for every accepted task and checks:

* every accepted task reached exactly one terminal outcome, DONE (none lost; `Row.lost`), and
  the event stream holds one terminal event for it (`Row.double_outcomes`);
* attempts <= retries + 1;
* no body started after its task's outcome was stored (`Row.late_runs`);
* a reader resuming the event stream page by page sees what one full read sees (no gap).

Only accepted tasks count: a batch whose send raised (the server was down) is sent again later
as new tasks, and whatever the failed send left behind runs unobserved. `Row` is one line of
the fault table in ``docs/guarantees.md``; ``TASKFLOW_FAULT_TABLE=<file>`` appends each row
there as JSON.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import anyio

from taskflow import BackendUnavailable, QueueTasks
from taskflow.abc import EventKind, TaskRecord, TaskStatus
from tests.services import poll_until

RETRIES = 5
LEASE_S = 2.0
TERMINAL = {EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED, EventKind.EXPIRED}

APP = textwrap.dedent(
    f"""
    import asyncio
    import os
    import time

    from taskflow import GlobalConfig, QueueTasks, TaskContext

    app = QueueTasks(
        name="faults",
        broker=os.environ["FAULT_URL"],
        config=GlobalConfig(
            lease_s={LEASE_S}, heartbeat_s=0.5, idle_poll_s=0.5, shutdown_grace_s=1.0
        ),
    )
    RUNS = os.environ["FAULT_RUNS"]


    @app.task(retries={RETRIES}, retry_backoff=0.05)
    async def work(ctx: TaskContext, i: int, step_s: float) -> int:
        line = f"{{ctx.task_id}} {{ctx.attempt}} {{os.getpid()}} {{time.time():.6f}}\\n"
        fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        await asyncio.sleep(step_s)
        return i
    """
)


@dataclasses.dataclass(frozen=True)
class Run:
    """One start of a task's body, from the runs log."""

    task_id: str
    attempt: int
    pid: int
    at: float


@dataclasses.dataclass
class Row:
    """What one fault did: one line of the fault table."""

    fault: str
    backend: str
    tasks: int
    lost: int = 0
    duplicate_runs: int = 0
    double_outcomes: int = 0
    late_runs: int = 0
    recovery_s: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def problems(self) -> list[str]:
        """What broke an invariant, in words (empty: every invariant held)."""
        found = list(self.notes)
        if self.lost:
            found.append(f"{self.lost} accepted task(s) never reached DONE")
        if self.double_outcomes:
            found.append(f"{self.double_outcomes} task(s) with more than one terminal event")
        if self.late_runs:
            found.append(f"{self.late_runs} body run(s) started after the outcome was stored")
        return found


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"faultapp_{os.urandom(4).hex()}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FaultRun:
    """Two worker processes and a producer on `url`; see the module docstring."""

    def __init__(
        self,
        tmp_path: Path,
        url: str,
        *,
        fault: str,
        backend: str,
        tasks: int = 1_000,
        step_s: float = 0.05,
        workers: int = 2,
    ) -> None:
        self.dir = tmp_path
        self.url = url
        self.row = Row(fault=fault, backend=backend, tasks=tasks)
        self.tasks = tasks
        self.step_s = step_s
        self.runs_path = tmp_path / "runs.log"
        self.env = {**os.environ, "FAULT_URL": url, "FAULT_RUNS": str(self.runs_path)}
        (tmp_path / "faultapp.py").write_text(APP)
        self.module = self._load_with_env()
        self.app: QueueTasks = self.module.app
        self.workers: list[subprocess.Popen[bytes]] = [self.start_worker() for _ in range(workers)]
        self.task_ids: list[str] = []
        self.produced = anyio.Event()

    def _load_with_env(self) -> ModuleType:
        saved = {k: os.environ.get(k) for k in ("FAULT_URL", "FAULT_RUNS")}
        os.environ.update(FAULT_URL=self.url, FAULT_RUNS=str(self.runs_path))
        try:
            return _load(self.dir / "faultapp.py")
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def start_worker(
        self, *, wrap: Sequence[str] = (), url: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start one more `taskflow worker` process (20 slots) on the app; `wrap` goes before
        the command (``ip netns exec <ns>``), `url` replaces the server's URL for it."""
        env = self.env if url is None else {**self.env, "FAULT_URL": url}
        return subprocess.Popen(
            [
                *wrap,
                *(sys.executable, "-m", "taskflow", "--log-level", "WARNING"),
                *("worker", "faultapp:app", "--concurrency", "20"),
            ],
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
        )

    async def __aenter__(self) -> FaultRun:
        await self.app.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a stopped worker cannot act on SIGTERM
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with anyio.CancelScope(shield=True):
            await self.app.__aexit__(exc_type, exc, tb)

    # -- the workload ---------------------------------------------------------------------

    async def send(self, count: int) -> None:
        """Send `count` more tasks at once (accepted: they join the invariants)."""
        calls = [self.module.work.prepare(-1 - i, self.step_s) for i in range(count)]
        self.task_ids += [h.task_id for h in await self.app.add_tasks(calls)]

    async def produce(self, batch: int = 50, every_s: float = 0.15) -> None:
        """Send `tasks` tasks in batches, one batch every `every_s`; a batch whose send raises
        `BackendUnavailable` is sent again (as new tasks) a moment later."""
        sent = 0
        while sent < self.tasks:
            size = min(batch, self.tasks - sent)
            calls = [self.module.work.prepare(sent + i, self.step_s) for i in range(size)]
            try:
                handles = await self.app.add_tasks(calls)
            except BackendUnavailable:
                await anyio.sleep(0.2)  # the server is away: try again, as a producer would
                continue
            self.task_ids += [h.task_id for h in handles]
            sent += size
            await anyio.sleep(every_s)  # a steady workload, not synchronization
        self.produced.set()

    def runs(self) -> list[Run]:
        """Every body start so far."""
        if not self.runs_path.exists():
            return []
        lines = self.runs_path.read_text().splitlines()
        return [
            Run(task_id, int(attempt), int(pid), float(at))
            for task_id, attempt, pid, at in (line.split() for line in lines if line)
        ]

    async def until_runs(self, count: int, deadline_s: float = 60.0) -> None:
        """Wait until `count` body starts are logged."""
        await poll_until(lambda: len(self.runs()) >= count, deadline_s=deadline_s)

    async def until_busy(self, pid: int, deadline_s: float = 30.0) -> None:
        """Wait until process `pid` has just started a body (within half a body's time), so a
        fault aimed at it lands while it runs tasks."""
        await poll_until(
            lambda: self.ran_since(time.time() - self.step_s / 2, pid),
            deadline_s=deadline_s,
            every_s=0.005,
        )

    def ran_since(self, after: float, pid: int | None = None) -> bool:
        """True once a body started after `after` (a wall time), in process `pid` if given."""
        return any(r.at > after and pid in (None, r.pid) for r in self.runs())

    async def recovered(self, after: float, deadline_s: float = 60.0) -> None:
        """Record how long after `after` (the fault's end, a wall time) a body started again;
        0 if nothing was left to start (every task sent had run by then)."""

        def all_ran() -> bool:
            return self.produced.is_set() and set(self.task_ids) <= {r.task_id for r in self.runs()}

        await poll_until(lambda: self.ran_since(after) or all_ran(), deadline_s=deadline_s)
        later = [run.at for run in self.runs() if run.at > after]
        self.row.recovery_s = round(min(later) - after, 3) if later else 0.0

    # -- the invariants -------------------------------------------------------------------

    async def finish(self, deadline_s: float = 90.0) -> Row:
        """Wait for every accepted task (at most `deadline_s`), check the invariants, and return
        the row (also appended to ``$TASKFLOW_FAULT_TABLE`` when set)."""
        storage = self.app.storage
        records: dict[str, TaskRecord | None] = {}
        with anyio.move_on_after(deadline_s):
            for task_id in self.task_ids:
                await storage.wait(task_id, timeout=None, now=time.time())
        for task_id in self.task_ids:
            records[task_id] = await storage.get(task_id, now=time.time())
        self._check(records, await self._events())
        self._report()
        return self.row

    async def _events(self) -> list[Any]:
        storage = self.app.storage
        whole = await storage.read_events("default", limit=1_000_000)
        paged: list[Any] = []
        cursor: str | None = None
        while page := await storage.read_events("default", after=cursor, limit=97):
            paged += page
            cursor = page[-1].cursor
        if [e.cursor for e in paged] != [e.cursor for e in whole]:
            self.row.notes.append("a reader resuming page by page saw other events")
        return whole

    def _check(self, records: dict[str, TaskRecord | None], events: list[Any]) -> None:
        row = self.row
        row.tasks = len(records)
        row.lost = sum(1 for r in records.values() if r is None or r.status is not TaskStatus.DONE)
        terminal = Counter(e.task_id for e in events if e.kind in TERMINAL)
        row.double_outcomes = sum(1 for task_id in records if terminal[task_id] > 1)
        missing = sum(1 for task_id in records if terminal[task_id] == 0)
        if missing:
            row.notes.append(f"{missing} task(s) with no terminal event")
        over = [r for r in records.values() if r is not None and r.attempts > RETRIES + 1]
        if over:
            row.notes.append(f"{len(over)} task(s) ran more than retries + 1 attempts")
        runs = [run for run in self.runs() if run.task_id in records]
        started = Counter(run.task_id for run in runs)
        row.duplicate_runs = sum(started.values()) - len(started)
        row.late_runs = sum(
            1
            for run in runs
            if (r := records[run.task_id]) is not None
            and r.finished_at is not None
            and run.at > r.finished_at
        )

    def _report(self) -> None:
        line = json.dumps(dataclasses.asdict(self.row))
        print(f"\nfault row: {line}")
        table = os.environ.get("TASKFLOW_FAULT_TABLE")
        if table:
            with open(table, "a", encoding="utf-8") as out:
                out.write(line + "\n")


async def run_with_fault(
    run: FaultRun, fault: Callable[[FaultRun], Awaitable[None]], *, burst: bool = False
) -> None:
    """The workload with `fault` injected once a quarter of it has run; then every invariant.

    `burst`: batches of 100 every 0.1 s, more than the slots take, so that workers hold claimed
    tasks waiting for a slot when the fault lands; else 50 every 0.15 s, a workload that
    outlasts the fault."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(run.produce, 100 if burst else 50, 0.1 if burst else 0.15)
        await run.until_runs(run.tasks // 4)
        await fault(run)
        await run.recovered(after=time.time())
    row = await run.finish()
    assert row.problems() == [], row
