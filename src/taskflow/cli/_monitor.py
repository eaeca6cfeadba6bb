"""``taskflow monitor``: a live terminal view of an app's workers, queues, leaders and errors;
with ``--spawn N``, of N worker processes it starts and stops.

This module is the command: it checks that Textual (the ``taskflow[monitor]`` extra) is
installed, loads the app, builds the data source (``_monitor_data``) and the processes
(``_monitor_procs``), and runs the screen (``_monitor_screen``) until ``q``. It stops what it
started even if the screen ends by an error.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from .._app import QueueTasks
from ._common import app_queues, parse_queues, shared_app
from ._errors import CliError, ExitCode
from ._monitor_data import AppData
from ._monitor_procs import Spawned, worker_command

if TYPE_CHECKING:  # Textual is optional: imported when the command runs
    from textual.app import App

__all__ = ["monitor"]


def monitor(args: argparse.Namespace) -> int:
    """Run ``taskflow monitor`` until ``q`` (see the module docstring)."""
    if importlib.util.find_spec("textual") is None:
        raise CliError(
            ExitCode.USAGE,
            "taskflow monitor needs Textual: pip install 'taskflow[monitor]'",
        )
    if args.spawn < 0:
        raise CliError(ExitCode.USAGE, f"--spawn must be >= 0, got {args.spawn}")
    if args.refresh <= 0:
        raise CliError(ExitCode.USAGE, f"--refresh must be > 0 seconds, got {args.refresh}")
    more = parse_queues(args.roles, "--roles") or []
    roles = [args.role, *(role for role in more if role != args.role)]
    app = shared_app(args.app, "monitor")
    queues = parse_queues(args.queues) or app_queues(app)
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="taskflow-monitor-"))
    _log_to_file(log_dir / "monitor.log")
    spawned = None
    if args.spawn:
        level = logging.getLevelName(args.log_level)
        spawned = Spawned(worker_command(args.app, level), args.spawn, log_dir)
    data = AppData(app, queues, roles, refresh_s=args.refresh)
    return anyio.run(_run, app, data, spawned, args.role)


def _log_to_file(path: Path) -> None:
    """Send this process's log records to `path`: the screen owns the terminal, and a line
    written to it would tear the picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    formatter = root.handlers[0].formatter if root.handlers else None
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path)
    handler.setFormatter(formatter)
    root.addHandler(handler)


async def _exit_on_signal(screen: App[None]) -> None:
    """End the screen on SIGTERM or SIGHUP (the terminal closed), as ``q`` does, so that the
    processes it started are stopped rather than left running."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async for _ in signals:
            screen.exit()
            return


async def _run(app: QueueTasks, data: AppData, spawned: Spawned | None, role: str) -> int:
    from ._monitor_screen import MonitorApp

    async with app:
        if spawned is not None:
            spawned.start()
        try:
            screen = MonitorApp(
                data, procs=spawned, role=role, title=f"taskflow monitor {app.name}"
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(_exit_on_signal, screen)
                await screen.run_async()
                tg.cancel_scope.cancel()
        finally:
            if spawned is not None:
                spawned.stop_all()
    return ExitCode.OK
