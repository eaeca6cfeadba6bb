"""``taskflow worker``: one worker in this process, or a supervisor of N worker processes.

With ``--processes N`` (N > 1) this process starts N children (each a ``taskflow worker ...
--processes 1``) in its own process group, forwards a stop signal to them once, and restarts
a child that dies with an exponential backoff; after `FAST_FAILURES_MAX` fast failures in a row
of one child it stops them all and exits with `ExitCode.WORKER_FAILED`.

Stop signals: a terminal's Ctrl-C reaches the whole process group (the children too) and the
supervisor forwards it as well, so a child gets two copies at once. Every process treats
copies of one stop request that arrive within a second as one (a graceful drain); a second
signal a second or more later stops at once (see ``taskflow._running.watch_signals``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
import traceback
from typing import Final

import anyio
import anyio.abc

from .._app import QueueTasks
from .._exceptions import BackendUnavailable
from .._lifecycle import loop_options
from .._running import hold_stop_signals, serve_until_signal, watch_signals
from .._starter import Starter
from ._common import load_app, parse_queues
from ._errors import CliError, ExitCode

__all__ = ["FAST_FAILURES_MAX", "worker"]

logger = logging.getLogger("taskflow.cli")

#: Restart backoff of a worker process that died: the first wait, doubled per failure up to
#: the cap.
RESTART_FIRST_S: Final = 0.25
RESTART_CAP_S: Final = 30.0
#: A worker process that dies within this long of starting failed fast; this many fast failures
#: in a row of one process stop the whole worker (something is wrong that restarts won't fix).
FAST_FAILURE_S: Final = 10.0
FAST_FAILURES_MAX: Final = 5


def worker(args: argparse.Namespace) -> int:
    """Run ``taskflow worker``: in this process, or as a supervisor of `args.processes`."""
    if args.processes < 1:
        raise CliError(ExitCode.USAGE, f"--processes must be >= 1, got {args.processes}")
    if args.concurrency is not None and args.concurrency < 1:
        raise CliError(ExitCode.USAGE, f"--concurrency must be >= 1, got {args.concurrency}")
    app = load_app(args.app)
    queues = parse_queues(args.queues)
    if args.processes == 1:
        return _run_here(app, args.concurrency, queues)
    if not app.storage.shared_across_processes:
        raise CliError(
            ExitCode.NOT_SHARED,
            f"--processes {args.processes} needs a backend that processes can share; app "
            f"{app.name!r} uses {app.storage.describe()}. Use a Redis or PostgreSQL URL "
            "(QueueTasks(broker='redis://...')), or run one process with more --concurrency",
        )
    anyio.run(_check_reachable, app)
    with hold_stop_signals():
        return anyio.run(_Supervisor(_child_command(args), args.processes).run)


def _run_here(app: QueueTasks, concurrency: int | None, queues: list[str] | None) -> int:
    """One worker in this process until stopped (`QueueTasks.run_forever`, told apart: an
    error before the worker was ready is a failed start)."""
    starter = Starter(app, concurrency=concurrency, queues=queues)
    try:
        with hold_stop_signals():
            anyio.run(serve_until_signal, starter, backend_options=loop_options())
    except BackendUnavailable:
        raise
    except Exception as exc:
        if starter.worker is None:
            raise CliError(
                ExitCode.WORKER_FAILED, f"the worker did not start: {_start_failure(exc)}"
            ) from exc
        raise
    return ExitCode.OK


def _start_failure(exc: BaseException) -> str:
    """What stopped a worker from starting, naming the `on_startup` hook that raised, if one
    did (found in the traceback: the frame below the app's hook runner)."""
    frames = traceback.extract_tb(exc.__traceback__)
    names = [frame.name for frame in frames]
    what = f"{type(exc).__name__}: {exc}"
    if "run_startup" in names:
        index = len(names) - 1 - names[::-1].index("run_startup")
        if index + 1 < len(frames):
            return f"on_startup hook {frames[index + 1].name}() raised {what}"
    return what


async def _check_reachable(app: QueueTasks) -> None:
    """Open and close the backend once, so a server that is down is one error at start, not a
    series of child processes that fail."""
    async with app:
        pass


def _child_command(args: argparse.Namespace) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "taskflow",
        "--log-level",
        logging.getLevelName(args.log_level),
        "worker",
        args.app,
        "--processes",
        "1",
    ]
    if args.concurrency is not None:
        command += ["--concurrency", str(args.concurrency)]
    if args.queues is not None:
        command += ["--queues", args.queues]
    return command


def _exit_text(status: int | None) -> str:
    if status is None:
        return "no exit status"
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    try:
        return f"exit status {status} ({ExitCode(status).name})"
    except ValueError:
        return f"exit status {status}"


class _Supervisor:
    """Keeps N worker processes running until a stop signal; see the module docstring."""

    def __init__(self, command: list[str], processes: int) -> None:
        self.command = command
        self.processes = processes
        self.children: dict[int, anyio.abc.Process] = {}
        self.stopping = False
        self._stopped = anyio.Event()
        self._gave_up: str | None = None

    async def run(self) -> int:
        async with anyio.create_task_group() as tg:
            # Listening before any child exists: a stop that comes while they start reaches
            # each child started (and children inherit no held signals).
            await tg.start(watch_signals, self._stop_all, self._forward)
            first = [await self._start(slot) for slot in range(self.processes)]
            logger.info(
                "started %d worker processes: %s",
                len(first),
                ", ".join(str(proc.pid) for proc in first),
            )
            async with anyio.create_task_group() as slots:
                for slot, proc in enumerate(first):
                    slots.start_soon(self._keep_running, slot, proc)
            tg.cancel_scope.cancel()
        if self._gave_up is not None:
            raise CliError(ExitCode.WORKER_FAILED, self._gave_up)
        return ExitCode.OK

    async def _start(self, slot: int) -> anyio.abc.Process:
        proc = await anyio.open_process(self.command, stdin=None, stdout=None, stderr=None)
        self.children[slot] = proc
        if self.stopping:  # the stop came while this child was being started
            proc.send_signal(signal.SIGTERM)
        return proc

    async def _keep_running(self, slot: int, proc: anyio.abc.Process) -> None:
        """Wait for the child of `slot`; restart it with backoff if it dies before a stop."""
        fast_failures = 0
        delay = RESTART_FIRST_S
        started = time.monotonic()
        while True:
            status = await proc.wait()
            if self.stopping:
                return
            lived = time.monotonic() - started
            if lived >= FAST_FAILURE_S:
                fast_failures, delay = 0, RESTART_FIRST_S
            fast_failures += 1
            if fast_failures >= FAST_FAILURES_MAX:
                self._give_up(proc.pid, status, fast_failures)
                return
            logger.warning(
                "worker process %d died (%s) after %.1f s; restarting it in %.2f s",
                proc.pid,
                _exit_text(status),
                lived,
                delay,
            )
            with anyio.move_on_after(delay):
                await self._stopped.wait()
            if self.stopping:
                return
            proc = await self._start(slot)
            started = time.monotonic()
            logger.info("restarted worker process %d", proc.pid)
            delay = min(delay * 2, RESTART_CAP_S)

    def _give_up(self, pid: int, status: int | None, failures: int) -> None:
        self._gave_up = (
            f"worker process {pid} failed {failures} times in a row within "
            f"{FAST_FAILURE_S:.0f} s of starting (last: {_exit_text(status)}); stopped all "
            "worker processes. Its output above says why; fix that and start the worker again"
        )
        logger.error("%s", self._gave_up)
        self._stop_all(signal.SIGTERM)

    def _stop_all(self, signum: int) -> None:
        """A stop request: restart nothing more, and pass `signum` on to every child."""
        self.stopping = True
        self._stopped.set()
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        for proc in self.children.values():
            if proc.returncode is None:
                proc.send_signal(signal.Signals(signum))
