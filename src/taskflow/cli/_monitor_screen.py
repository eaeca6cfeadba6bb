"""The screen of ``taskflow monitor``: a Textual app of tables, and its keys.

`MonitorApp` shows the leaders of named roles, the processes ``--spawn`` started (as the
seed's monitor does: pid, whether it leads, generated, processed, errors), the worker
registry, the queues by state, throughput and the latest failed attempts. It reads queues and
leaders every `refresh_s`, the registry every `registry_s` (the workers' heartbeat), the error
log after the stream showed a failure, and follows the event stream, push-driven, for
throughput and "generated" counts. Keys: ``q`` stops every process it
started and quits, ``k`` SIGKILLs the current leader of the watched role.

Textual is imported here only; the command (``_monitor``) imports this module once it has
checked that Textual is installed.
"""

from __future__ import annotations

import collections
import datetime
from collections.abc import Sequence
from typing import ClassVar, Final

import anyio
import anyio.to_thread
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Static

from .._message import Event, EventKind, FailedAttempt, LeaseInfo, QueueStats, WorkerInfo
from ._monitor_data import MonitorData, Snapshot, Throughput, is_failure, monotonic, owner_pid
from ._monitor_procs import ProcessControl, exit_text

__all__ = ["MonitorApp"]

#: How many failed attempts the errors table keeps.
ERRORS_SHOWN: Final = 20


def _clock(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).strftime("%H:%M:%S")


def leader_text(role: str, lease: LeaseInfo | None) -> str:
    """One line per role: who leads it (and its pid, if the owner names one)."""
    if lease is None:
        return f"{role}: no leader"
    pid = owner_pid(lease.owner)
    who = f"pid {pid}" if pid is not None else lease.owner
    return f"{role}: {who} (owner {lease.owner}, token {lease.token})"


class MonitorApp(App[None]):
    """The live view (see the module docstring).

    Args:
        data: Where the figures come from.
        procs: The processes ``--spawn`` started, or None.
        role: The role whose leader ``k`` kills.
        title: What the header line calls the app.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit_all", "quit (stops the processes it started)"),
        Binding("k", "kill_leader", "kill the leader"),
    ]
    CSS = """
    DataTable { height: auto; max-height: 12; }
    Static { height: auto; }
    .title { text-style: bold; margin-top: 1; }
    """

    def __init__(
        self,
        data: MonitorData,
        *,
        procs: ProcessControl | None = None,
        role: str = "generator",
        title: str = "taskflow",
    ) -> None:
        super().__init__()
        self.data = data
        self.procs = procs
        self.role = role
        self.heading = title
        self.snapshot = Snapshot()
        self.registry: list[WorkerInfo] = []
        self.throughput = Throughput()
        self.errors: list[FailedAttempt] = []
        #: Set by a failed attempt on the stream: the error log is read at the next refresh.
        self.errors_stale = True
        self.generated: collections.Counter[int] = collections.Counter()
        #: What went wrong or what a key did, by source ("snapshot", "registry", "events",
        #: "key"), shown on the summary line.
        self.notes: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(id="summary")
            yield Static(id="leaders")
            if self.procs is not None:
                yield Static("Processes started by --spawn", classes="title")
                yield DataTable(id="processes")
            yield Static("Workers (registry)", classes="title")
            yield DataTable(id="workers")
            yield Static("Queues", classes="title")
            yield DataTable(id="queues")
            yield Static("Latest failed attempts", classes="title")
            yield DataTable(id="errors")
        yield Footer()

    def on_mount(self) -> None:
        self._columns("processes", "pid", "leader", "generated", "processed", "errors", "state")
        self._columns(
            "workers", "worker", "host", "pid", "queues", "running", "processed", "failed",
            "roles", "heartbeat",
        )  # fmt: skip
        self._columns("queues", "queue", "ready", "scheduled", "running", "dead", "done/min")
        self._columns("errors", "time", "task", "attempt", "worker", "error", "where", "then")
        self.run_worker(self.follow_events(), name="events", exit_on_error=False)
        self.set_interval(self.data.refresh_s, self.refresh_snapshot)
        self.set_interval(self.data.registry_s, self.refresh_workers)
        self.call_later(self.refresh_snapshot)
        self.call_later(self.refresh_workers)

    def _columns(self, table_id: str, *names: str) -> None:
        tables = self.query(f"#{table_id}")
        if tables:
            tables.first(DataTable).add_columns(*names)

    # -- data in ---------------------------------------------------------------------------

    def take_event(self, event: Event) -> None:
        """One event of the stream: count it, note an error, credit a send to the leader."""
        self.notes.pop("events", None)
        self.throughput.add(event, monotonic())
        if is_failure(event):
            self.errors_stale = True
        if event.kind is EventKind.QUEUED:
            leader = self.leader_pid()
            if leader is not None:
                self.generated[leader] += 1

    async def follow_events(self) -> None:
        """Follow the event stream for as long as the screen runs; if the backend drops it,
        say so and follow again after a refresh interval (from the newest event: what came
        meanwhile is in the counts the snapshot reads, not in the stream's tallies)."""
        while True:
            try:
                await self.data.follow(self.take_event)
            except Exception as exc:
                self.notes["events"] = (
                    f"event stream lost ({type(exc).__name__}: {exc}); following again"
                )
            await anyio.sleep(self.data.refresh_s)  # a backoff before following again

    async def refresh_snapshot(self) -> None:
        """Read the snapshot (and the error log, if the stream showed a failure) again and
        redraw everything."""
        try:
            self.snapshot = await self.data.snapshot()
            if self.errors_stale:
                self.errors_stale = False
                self.errors = await self.data.errors(ERRORS_SHOWN)
            self.notes.pop("snapshot", None)
        except Exception as exc:
            self.notes["snapshot"] = f"cannot read the backend: {type(exc).__name__}: {exc}"
        self.redraw()

    async def refresh_workers(self) -> None:
        """Read the worker registry again (at the workers' heartbeat cadence) and redraw."""
        try:
            self.registry = await self.data.workers()
            self.notes.pop("registry", None)
            # Read the error log at the next refresh as well: a failure whose event was not
            # seen (the stream was being followed again) still shows within a heartbeat.
            self.errors_stale = True
        except Exception as exc:
            self.notes["registry"] = f"cannot read the registry: {type(exc).__name__}: {exc}"
        self.redraw()

    def leader_pid(self) -> int | None:
        """The pid of the watched role's current leader, if its lease owner names one."""
        lease = self.snapshot.leaders.get(self.role)
        return None if lease is None else owner_pid(lease.owner)

    # -- drawing ---------------------------------------------------------------------------

    def redraw(self) -> None:
        rate = self.throughput.per_second(monotonic())
        summary = f"{self.heading}  throughput {rate:.1f}/s  finished {self.throughput.total}"
        self.query_one("#summary", Static).update("  ".join([summary, *self.notes.values()]))
        leaders = [leader_text(role, lease) for role, lease in self.snapshot.leaders.items()]
        self.query_one("#leaders", Static).update("\n".join(leaders) or "no roles watched")
        self._fill("processes", self._process_rows())
        self._fill("workers", [_worker_cells(w) for w in self.registry])
        self._fill("queues", [_queue_cells(q) for q in self.snapshot.queues])
        self._fill("errors", [_error_cells(e) for e in self.errors])

    def _fill(self, table_id: str, rows: Sequence[Sequence[object]]) -> None:
        tables = self.query(f"#{table_id}")
        if not tables:
            return
        table = tables.first(DataTable)
        table.clear()
        table.add_rows(rows)

    def _process_rows(self) -> list[list[object]]:
        if self.procs is None:
            return []
        by_pid = {w.pid: w for w in self.registry}
        leader = self.leader_pid()
        rows: list[list[object]] = []
        for proc in self.procs.rows():
            worker = by_pid.get(proc.pid)
            rows.append(
                [
                    proc.pid,
                    f"* {self.role}" if proc.pid == leader and proc.alive else "",
                    self.generated[proc.pid],
                    "-" if worker is None else worker.processed,
                    "-" if worker is None else worker.failed,
                    exit_text(proc.returncode),
                ]
            )
        return rows

    # -- keys ------------------------------------------------------------------------------

    def action_kill_leader(self) -> None:
        """``k``: SIGKILL the watched role's leader, if it is a process this monitor started."""
        pid = self.leader_pid()
        if self.procs is None or pid is None or not self.procs.kill(pid):
            self.notes["key"] = (
                f"k: no leader of {self.role!r} among the processes this monitor started"
            )
        else:
            self.notes["key"] = f"k: killed pid {pid} (leader of {self.role!r})"
        self.redraw()

    async def action_quit_all(self) -> None:
        """``q``: stop every process this monitor started (in a thread: the screen keeps
        drawing during the grace), then quit."""
        if self.procs is not None:
            self.notes["key"] = "q: stopping the processes this monitor started"
            self.redraw()
            await anyio.to_thread.run_sync(self.procs.stop_all)
        self.exit()


def _worker_cells(w: WorkerInfo) -> list[object]:
    return [
        w.id,
        w.host,
        w.pid,
        ",".join(w.queues),
        w.running,
        w.processed,
        w.failed,
        ",".join(w.roles),
        _clock(w.heartbeat_at) if w.heartbeat_at else "-",
    ]


def _queue_cells(q: QueueStats) -> list[object]:
    return [q.queue, q.queued, q.scheduled, q.running, q.dead, q.finished_last_minute]


def _error_cells(e: FailedAttempt) -> list[object]:
    return [
        _clock(e.at),
        e.name,
        e.attempt,
        e.worker_id or "-",
        _short(f"{e.error.type}: {e.error.message}", 60),
        _tail(e.last_frame, 50),
        "retried" if e.retried else "failed",
    ]


def _short(text: str, width: int) -> str:
    """`text` on one line, cut to `width` at its end."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _tail(text: str, width: int) -> str:
    """`text` on one line, cut to `width` at its start (a frame's line and function stay)."""
    text = " ".join(text.split())
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]
