"""``taskflow monitor --spawn 3`` end to end in a real terminal: tmux on a private socket runs
the monitor against the test Redis with an app module written here (an elected generator that
sends a task every 500 ms, and processors), presses ``k`` and watches another process take the
role on screen, then ``q`` and checks that every process it started is gone.

Needs the tmux binary (``apt-get install tmux``; scripts/services says so); skipped with the
reason when tmux is missing or cannot start a server. The tmux server is stopped by its socket
(``tmux -L NAME kill-server``), and processes are only ever signalled by pid.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_support import drop_shared, env_for, shared_url, write_app
from tests.services import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]

APP = """
    import anyio

    from taskflow import LeadershipLost, QueueTasks

    app = QueueTasks(broker={url!r})


    @app.task
    async def process(n: int) -> int:
        return n


    @app.worker_service
    async def generate(app: QueueTasks, state: object) -> None:
        # The seed's generator: whoever holds the role sends a message every 500 ms; the
        # others process them (as workers) and campaign until the holder is gone.
        while True:
            try:
                async with app.leadership("generator", ttl=2) as term:
                    n = 0
                    while True:
                        await process.add_task(n)
                        n += 1
                        await anyio.sleep(0.5)
            except LeadershipLost:
                continue
"""

LEADER = re.compile(r"generator: pid (\d+)")
#: A row of the processes table: pid, leader mark, generated, processed, errors, state.
PROCESS_ROW = re.compile(
    r"^ (\d+) +(\* generator)? +(\d+) +(\d+|-) +(\d+|-) +(running|killed by \w+|exited -?\d+)",
    re.MULTILINE,
)


class Tmux:
    """A tmux server of the test's own (private socket), driven by its command line."""

    def __init__(self, socket: str, env: dict[str, str]) -> None:
        self.socket = socket
        self.env = env

    def run(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", os.devnull, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=10,
            check=True,
        )
        return done.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "mon")

    def kill_server(self) -> None:
        """Stop the server by its socket, and remove the socket file tmux leaves behind."""
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"],
            capture_output=True,
            env=self.env,
            timeout=10,
        )
        tmpdir = Path(self.env.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
        (tmpdir / self.socket).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


def _children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (read from /proc: by parent, never by name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    # A short lease: workers write their registry entry every second (a third of it).
    env = env_for(tmp_path, TERM="xterm-256color", TASKFLOW_LEASE_S="3")
    env.pop("TMUX", None)
    server = Tmux(f"taskflow-test-{os.getpid()}-{os.urandom(3).hex()}", env)
    try:
        server.run("start-server", ";", "show-options", "-g")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        server.kill_server()
        pytest.skip(f"tmux cannot start a server here: {exc}")
    try:
        yield server
    finally:
        server.kill_server()


def test_k_kills_the_generator_and_another_takes_over_on_screen(tmux: Tmux, tmp_path: Path) -> None:
    url = shared_url("redis")
    target = write_app(tmp_path, "seedapp", APP.format(url=url))
    command = (
        f"cd {tmp_path} && exec {sys.executable} -m taskflow monitor --spawn 3 "
        f"--log-dir {tmp_path / 'logs'} {target}"
    )
    spawned: list[int] = []
    try:
        tmux.run("new-session", "-d", "-s", "mon", "-x", "160", "-y", "60", command)
        monitor_pid = int(tmux.run("display-message", "-p", "-t", "mon", "#{pane_pid}"))
        wait_until(
            lambda: len(_children(monitor_pid)) == 3, deadline_s=30, failure="3 workers start"
        )
        spawned = _children(monitor_pid)

        first = _leader_on_screen(tmux, spawned, failure="a spawned worker leads")
        tmux.run("send-keys", "-t", "mon", "k")
        wait_until(
            lambda: _leader(tmux.screen()) not in (None, first),
            deadline_s=30,
            failure=f"another worker than {first} shows as the leader after k:\n{tmux.screen()}",
        )
        second = _leader(tmux.screen())
        assert second in spawned
        assert not _alive(first)
        wait_until(  # the old leader's row says how it ended; the others count what they did
            lambda: (
                _rows(tmux.screen()).get(first, ("",))[-1] == "killed by SIGKILL"
                and sum(int(row[3]) for row in _rows(tmux.screen()).values() if row[3] != "-") > 0
            ),
            deadline_s=30,
            failure=f"the processes table shows the kill and processed counts:\n{tmux.screen()}",
        )
        assert _rows(tmux.screen())[second][1] == "* generator"

        tmux.run("send-keys", "-t", "mon", "q")
        wait_until(
            lambda: not any(_alive(pid) for pid in [monitor_pid, *spawned]),
            deadline_s=30,
            failure="the monitor and every process it started end after q",
        )
    finally:
        for pid in spawned:  # only if the test failed midway: the workers it started, by pid
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        drop_shared(url)


def _leader(screen: str) -> int | None:
    match = LEADER.search(screen)
    return None if match is None else int(match.group(1))


def _rows(screen: str) -> dict[int, tuple[str, ...]]:
    """The processes table on the screen, by pid."""
    return {int(m[1]): tuple(g or "" for g in m.groups()) for m in PROCESS_ROW.finditer(screen)}


def _leader_on_screen(tmux: Tmux, spawned: list[int], *, failure: str) -> int:
    wait_until(
        lambda: _leader(tmux.screen()) in spawned,
        deadline_s=30,
        failure=f"{failure}:\n{tmux.screen()}",
    )
    leader = _leader(tmux.screen())
    assert leader is not None
    return leader


@pytest.mark.parametrize("how", ["SIGTERM", "closed terminal"])
def test_a_stopped_monitor_stops_the_processes_it_started(
    tmux: Tmux, tmp_path: Path, how: str
) -> None:
    url = shared_url("redis")
    target = write_app(tmp_path, "seedapp", APP.format(url=url))
    command = f"cd {tmp_path} && exec {sys.executable} -m taskflow monitor --spawn 2 {target}"
    spawned: list[int] = []
    try:
        tmux.run("new-session", "-d", "-s", "mon", "-x", "160", "-y", "60", command)
        monitor_pid = int(tmux.run("display-message", "-p", "-t", "mon", "#{pane_pid}"))
        wait_until(
            lambda: len(_children(monitor_pid)) == 2, deadline_s=30, failure="2 workers start"
        )
        spawned = _children(monitor_pid)
        _leader_on_screen(tmux, spawned, failure="a spawned worker leads")
        if how == "SIGTERM":
            os.kill(monitor_pid, signal.SIGTERM)
        else:
            tmux.kill_server()  # the pane's terminal goes away: SIGHUP
        wait_until(
            lambda: not any(_alive(pid) for pid in [monitor_pid, *spawned]),
            deadline_s=30,
            failure=f"the monitor and every process it started end after {how}",
        )
    finally:
        for pid in spawned:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        drop_shared(url)
