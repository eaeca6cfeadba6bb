"""The worker processes ``taskflow monitor --spawn N`` starts, and how it stops them.

`Spawned` starts N ``python -m taskflow worker MODULE:APP`` children (their output goes to one
log file each, not to the screen), reports each one's state, SIGKILLs one by pid (the ``k``
key) and stops them all by pid: SIGTERM, then SIGKILL after a grace (the ``q`` key). It never
signals a process it did not start, and never looks one up by name. What the processes do is
read from the backend (``_monitor_data``), not from their output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Protocol

__all__ = ["STOP_GRACE_S", "ProcessControl", "ProcessRow", "Spawned", "exit_text", "worker_command"]

#: How long stopped children get to drain after SIGTERM before they are SIGKILLed.
STOP_GRACE_S: Final = 5.0


@dataclass(frozen=True)
class ProcessRow:
    """One started process: its pid and, once it ended, how."""

    pid: int
    returncode: int | None

    @property
    def alive(self) -> bool:
        return self.returncode is None


class ProcessControl(Protocol):
    """What the screen needs of the processes it started (`Spawned`, or a test's fake)."""

    def rows(self) -> list[ProcessRow]:
        """Every started process, in start order, with its state now."""
        ...

    def kill(self, pid: int) -> bool:
        """SIGKILL `pid` if it is one of ours and alive; whether a signal was sent."""
        ...

    def stop_all(self) -> None:
        """Stop every started process (SIGTERM, SIGKILL after a grace) and reap it."""
        ...


def exit_text(returncode: int | None) -> str:
    """How a process is doing, in a word or two: running, exited N, killed by SIGNAME."""
    if returncode is None:
        return "running"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exited {returncode}"


class Spawned:
    """N worker processes of one app, started and stopped by this process (see the module
    docstring).

    Args:
        command: The command line of one worker process.
        count: How many to start.
        log_dir: Where each child's output goes (``worker-<pid>.log``).
        grace_s: SIGTERM-to-SIGKILL grace of `stop_all`.
    """

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        log_dir: Path,
        *,
        grace_s: float = STOP_GRACE_S,
    ) -> None:
        self.command = list(command)
        self.count = count
        self.log_dir = log_dir
        self.grace_s = grace_s
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def start(self) -> None:
        """Start the processes (each with its own log file)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for slot in range(self.count):
            log = (self.log_dir / f"worker-{os.getpid()}-{slot}.log").open("ab")
            self._logs.append(log)
            # A process group of its own: the terminal's signals (a hangup, Ctrl-C) reach the
            # monitor only, which stops its children gracefully and by pid.
            proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
            self._procs.append(proc)

    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    def rows(self) -> list[ProcessRow]:
        return [ProcessRow(proc.pid, proc.poll()) for proc in self._procs]

    def kill(self, pid: int) -> bool:
        for proc in self._procs:
            if proc.pid == pid and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                return True
        return False

    def stop_all(self) -> None:
        alive = [proc for proc in self._procs if proc.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for proc in alive:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        for log in self._logs:
            log.close()


def worker_command(target: str, log_level: str) -> list[str]:
    """The command line of one spawned worker: ``python -m taskflow worker MODULE:APP``."""
    return [sys.executable, "-m", "taskflow", "--log-level", log_level, "worker", target]
