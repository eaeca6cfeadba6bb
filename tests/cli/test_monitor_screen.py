"""``taskflow monitor``'s screen under Textual's pilot (`App.run_test`): what it shows of an
app on every backend (queues, leaders, the worker registry, the error log; throughput from the
event stream), and its keys against fake processes (``k`` kills the leader by pid, ``q`` stops
them all and quits).

The end-to-end test in a real terminal (tmux, Redis, real worker processes) is
tests/cli/test_monitor_tmux.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import pytest
from textual.widgets import DataTable, Static

from taskflow import ErrorInfo, FailedAttempt, GlobalConfig, QueueTasks, WorkerInfo
from taskflow.abc import Event, LeaseInfo, QueueStats
from taskflow.cli._monitor_data import AppData, Snapshot
from taskflow.cli._monitor_procs import ProcessRow
from taskflow.cli._monitor_screen import MonitorApp
from tests.services import poll_until


def _text(screen: MonitorApp, widget_id: str) -> str:
    return str(screen.query_one(f"#{widget_id}", Static).content)


def _cells(screen: MonitorApp, table_id: str) -> list[list[str]]:
    table = screen.query_one(f"#{table_id}", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


KINDS = [
    pytest.param("memory"),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis_cluster", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=KINDS)
def app_url(request: pytest.FixtureRequest) -> str:
    """A URL of each backend kind, in a namespace of the test's own."""
    url: str = request.getfixturevalue(f"backend_url_{request.param}")
    return url


async def test_shows_queues_leaders_workers_errors_and_throughput(app_url: str) -> None:
    # A short lease: the worker rewrites its registry entry every 0.5 s (a third of it).
    app = QueueTasks(broker=app_url, config=GlobalConfig(lease_s=1.5))

    @app.task
    async def ok() -> None:
        pass

    @app.task(retries=0)
    async def boom() -> None:
        raise ValueError("no such order")

    async with app, app.leadership("generator", owner="hostx:4242:ab:1"):
        data = AppData(app, [app.config.default_queue], ["generator"], refresh_s=0.05)
        screen = MonitorApp(data, title="the app")
        async with screen.run_test() as pilot:
            await boom.add_task()
            await ok.add_task()
            await ok.add_task()
            await poll_until(
                lambda: ["default", "3", "0", "0", "0", "0"] in _cells(screen, "queues"),
                deadline_s=10,
            )
            async with app.running():
                await poll_until(
                    lambda: ["default", "0", "0", "0", "1", "3"] in _cells(screen, "queues"),
                    deadline_s=10,
                )
                await poll_until(lambda: len(_cells(screen, "errors")) == 1, deadline_s=10)
                [error] = _cells(screen, "errors")
                assert error[1:3] == [boom.name, "1"]
                assert error[4] == "ValueError: no such order"
                assert "in boom" in error[5] and error[6] == "failed"
                await poll_until(  # the registry: 2 processed, 1 failed
                    lambda: [row[5:7] for row in _cells(screen, "workers")] == [["2", "1"]],
                    deadline_s=10,
                )
            assert "generator: pid 4242" in _text(screen, "leaders")
            await pilot.press("q")
        assert screen.return_code == 0


async def test_counts_throughput_from_the_event_stream() -> None:
    app = QueueTasks()

    @app.task
    async def ok() -> None:
        pass

    async with app:
        data = AppData(app, [app.config.default_queue], [], refresh_s=0.05)
        screen = MonitorApp(data)
        async with screen.run_test():
            await anyio.wait_all_tasks_blocked()  # the (in-memory) stream is followed from here
            await ok.add_task()
            await ok.add_task()
            async with app.running():
                await poll_until(lambda: "finished 2" in _text(screen, "summary"), deadline_s=5)
            assert "no roles watched" in _text(screen, "leaders")


@dataclass
class FakeProcesses:
    """Two started processes; records what the screen asks of them."""

    pids: list[int] = field(default_factory=lambda: [101, 102])
    killed: list[int] = field(default_factory=list)
    stopped: bool = False

    def rows(self) -> list[ProcessRow]:
        return [ProcessRow(pid, -9 if pid in self.killed else None) for pid in self.pids]

    def kill(self, pid: int) -> bool:
        if pid in self.pids and pid not in self.killed:
            self.killed.append(pid)
            return True
        return False

    def stop_all(self) -> None:
        self.stopped = True


@dataclass
class FakeData:
    """A registry of two workers, one leading "generator"; events pushed by the test."""

    leader_owner: str = "h:102:x"
    refresh_s: float = 0.05
    registry_s: float = 0.05
    push: Callable[[Event], None] | None = None

    async def snapshot(self) -> Snapshot:
        return Snapshot(
            queues=[QueueStats(queue="default", queued=1)],
            leaders={
                "generator": LeaseInfo(
                    name="generator", owner=self.leader_owner, token=7, expires_at=0
                )
            },
        )

    async def workers(self) -> list[WorkerInfo]:
        return [
                WorkerInfo(
                    id="w1", host="h", pid=101, queues=("default",), concurrency=4,
                    started_at=0, processed=5, failed=1,
                ),
                WorkerInfo(
                    id="w2", host="h", pid=102, queues=("default",), concurrency=4,
                    started_at=0, roles=("generator",),
                ),
        ]  # fmt: skip

    async def errors(self, limit: int) -> list[FailedAttempt]:
        error = ErrorInfo("KeyError", "'sku'", 'File "shop.py", line 3, in pick')
        attempt = FailedAttempt(
            at=0, task_id="t1", name="pick", queue="default", attempt=2, worker_id="w1",
            error=error, retried=True,
        )  # fmt: skip
        return [attempt][:limit]

    async def follow(self, on_event: Callable[[Event], None]) -> None:
        self.push = on_event
        await anyio.sleep_forever()


async def test_spawned_processes_show_as_the_seed_monitor_and_k_kills_the_leader() -> None:
    procs, data = FakeProcesses(), FakeData()
    screen = MonitorApp(data, procs=procs, role="generator")
    async with screen.run_test() as pilot:
        await poll_until(lambda: len(_cells(screen, "processes")) == 2, deadline_s=5)
        rows = {row[0]: row for row in _cells(screen, "processes")}
        assert rows["101"][1:] == ["", "0", "5", "1", "running"]
        assert rows["102"][1] == "* generator"
        assert [r[0] for r in _cells(screen, "workers")] == ["w1", "w2"]
        assert _cells(screen, "errors")[0][1:] == [
            "pick", "2", "w1", "KeyError: 'sku'", 'File "shop.py", line 3, in pick', "retried",
        ]  # fmt: skip
        await pilot.press("k")
        assert procs.killed == [102]
        data.leader_owner = "h:101:y"  # the other one takes over
        await poll_until(
            lambda: (
                {r[0]: r[1] for r in _cells(screen, "processes")}
                == {"101": "* generator", "102": ""}
            ),
            deadline_s=5,
        )
        assert "killed by SIGKILL" in {r[0]: r[5] for r in _cells(screen, "processes")}["102"]
        await pilot.press("q")
    assert procs.stopped


async def test_k_without_a_leader_among_its_processes_kills_nothing() -> None:
    procs, data = FakeProcesses(), FakeData(leader_owner="elsewhere:999:z")
    screen = MonitorApp(data, procs=procs)
    async with screen.run_test() as pilot:
        await poll_until(lambda: "generator: pid 999" in _text(screen, "leaders"), deadline_s=5)
        await pilot.press("k")
        assert procs.killed == []
        assert "no leader of 'generator'" in _text(screen, "summary")


@dataclass
class FlakyData(FakeData):
    """The first snapshot read and the first follow fail, as a backend that went away."""

    snapshot_failures: int = 1
    follows: int = 0

    async def snapshot(self) -> Snapshot:
        if self.snapshot_failures:
            self.snapshot_failures -= 1
            raise ConnectionError("server closed the connection")
        return await super().snapshot()

    async def follow(self, on_event: Callable[[Event], None]) -> None:
        self.follows += 1
        if self.follows == 1:
            raise ConnectionError("stream dropped")
        await super().follow(on_event)


async def test_a_backend_that_drops_is_shown_and_read_again() -> None:
    data = FlakyData()
    screen = MonitorApp(data)
    async with screen.run_test():
        await poll_until(lambda: data.follows == 2, deadline_s=5)
        await poll_until(lambda: "generator: pid 102" in _text(screen, "leaders"), deadline_s=5)
        assert "cannot read" not in _text(screen, "summary")
        assert "event stream lost (ConnectionError: stream dropped)" in _text(screen, "summary")
