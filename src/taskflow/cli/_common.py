"""What the CLI's commands share: the app the command line names (`load_app`), checked for a
backend another process can read (`shared_app`), and the queues an option names."""

from __future__ import annotations

import importlib
import os
import sys

from .._app import QueueTasks
from .._exceptions import TaskflowError
from ._errors import CliError, ExitCode

__all__ = ["app_queues", "load_app", "parse_queues", "shared_app"]


def load_app(target: str) -> QueueTasks:
    """Import ``module:attribute`` and return the `QueueTasks` it names.

    Raises:
        CliError: the target is malformed, its module cannot be imported, or it is not an app.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(
            ExitCode.USAGE,
            f"expected MODULE:APP (for example `myproject.tasks:app`), got {target!r}",
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(ExitCode.USAGE, f"cannot import module {module_name!r}: {exc}") from exc
    except TaskflowError:
        raise  # a bad setting, a missing driver: reported by its kind
    except Exception as exc:
        raise CliError(
            ExitCode.ERROR,
            f"importing module {module_name!r} raised {type(exc).__name__}: {exc} (run with "
            "--log-level DEBUG for the traceback)",
        ) from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, QueueTasks):
        raise CliError(ExitCode.USAGE, f"{target!r} is {app!r}, not a QueueTasks app")
    return app


def shared_app(target: str, command: str) -> QueueTasks:
    """The app `target` names, if its backend can be read from this (another) process.

    Raises:
        CliError: `ExitCode.NOT_SHARED` on the memory backend (and what `load_app` raises).
    """
    app = load_app(target)
    if not app.storage.shared_across_processes:
        raise CliError(
            ExitCode.NOT_SHARED,
            f"`taskflow {command}` cannot reach the tasks of app {app.name!r}: its backend is "
            f"{app.storage.describe()}, which another process cannot read; give the app a Redis "
            "or PostgreSQL URL (QueueTasks(broker='redis://...')) to use the CLI on its tasks",
        )
    return app


def parse_queues(raw: str | None, option: str = "--queues") -> list[str] | None:
    """The names (queues, roles) of a comma-separated option (None if not given).

    Raises:
        CliError: `ExitCode.USAGE` if it names nothing.
    """
    if raw is None:
        return None
    queues = [q.strip() for q in raw.split(",") if q.strip()]
    if not queues:
        raise CliError(ExitCode.USAGE, f"{option} needs at least one name, got {raw!r}")
    return queues


def app_queues(app: QueueTasks) -> list[str]:
    """The default queue, then every other queue a registered task names, in name order."""
    default = app.config.default_queue
    named = sorted({d.queue for d in app.tasks.values() if d.queue and d.queue != default})
    return [default, *named]
