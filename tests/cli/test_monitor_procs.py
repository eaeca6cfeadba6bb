"""The processes ``taskflow monitor --spawn`` starts (`Spawned`), as real processes: ``k``
kills one by pid, ``q`` stops them all (SIGTERM, then SIGKILL to one that ignores it after the
grace); and the command's one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

from taskflow.cli import ExitCode
from taskflow.cli._monitor_procs import Spawned, exit_text
from tests.cli_support import run_cli, write_app
from tests.services import wait_until

IGNORES_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_kill_signals_only_its_own_pid_and_stop_all_escalates_after_the_grace(
    tmp_path: Path,
) -> None:
    spawned = Spawned([sys.executable, "-c", IGNORES_SIGTERM], 2, tmp_path, grace_s=0.5)
    spawned.start()
    try:
        first, second = spawned.pids()
        wait_until(  # both ignore SIGTERM from here on
            lambda: all("ready" in log.read_text() for log in tmp_path.glob("worker-*.log")),
            deadline_s=10,
            failure="the children start",
        )
        assert not spawned.kill(999_999_999)  # not one of ours: nothing is signalled
        assert spawned.kill(first)
        spawned.stop_all()
        states = {row.pid: exit_text(row.returncode) for row in spawned.rows()}
        assert states == {first: "killed by SIGKILL", second: "killed by SIGKILL"}
        assert not spawned.kill(first)  # already ended
    finally:
        spawned.stop_all()


def test_monitor_refuses_the_memory_backend_and_a_negative_spawn(tmp_path: Path) -> None:
    target = write_app(tmp_path, "memapp", "from taskflow import QueueTasks\napp = QueueTasks()\n")
    done = run_cli(tmp_path, "monitor", target)
    assert done.returncode == ExitCode.NOT_SHARED
    assert "taskflow monitor" in done.stderr and "Traceback" not in done.stderr
    done = run_cli(tmp_path, "monitor", "--spawn", "-1", target)
    assert done.returncode == ExitCode.USAGE
    assert "--spawn must be >= 0" in done.stderr


def test_monitor_roles_option_needs_a_name(tmp_path: Path) -> None:
    target = write_app(tmp_path, "memapp", "from taskflow import QueueTasks\napp = QueueTasks()\n")
    done = run_cli(tmp_path, "monitor", "--roles", ",", target)
    assert done.returncode == ExitCode.USAGE
    assert "--roles needs at least one name" in done.stderr
