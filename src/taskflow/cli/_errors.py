"""What a `taskflow` command's exit status means, and how an error becomes one line and a status.

Every command ends through `report`: an error is printed as one line, ``taskflow: <message>``,
on stderr, with an exit status a script can tell apart (`ExitCode`); its traceback only with
``--log-level DEBUG``.
"""

from __future__ import annotations

import enum
import textwrap
import traceback
from typing import Final

from .._exceptions import (
    ArtifactNotFound,
    BackendUnavailable,
    ConfigError,
    EncodeError,
    FlowNotFound,
    InvalidArguments,
    InvalidArtifactName,
    InvalidOption,
    ScheduleNotFound,
    TaskFailed,
    TaskflowError,
    TaskNotFound,
    TaskRegistrationError,
    UnknownTaskError,
)

__all__ = ["EXIT_CODE_MEANINGS", "CliError", "ExitCode", "classify", "exit_codes_help"]


class ExitCode(enum.IntEnum):
    """The exit status of a `taskflow` command (listed by ``taskflow --help``)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    UNAVAILABLE = 3
    NOT_FOUND = 4
    TASK_FAILED = 5
    WORKER_FAILED = 6
    NOT_SHARED = 7
    ARTIFACT_NOT_FOUND = 8
    PORT_IN_USE = 9
    MISSING_EXTRA = 10
    INTERRUPTED = 130


EXIT_CODE_MEANINGS: Final = {
    ExitCode.OK: "success (a worker: stopped after a stop signal)",
    ExitCode.ERROR: (
        "an unexpected error, such as a bug in a task module; --log-level DEBUG shows its traceback"
    ),
    ExitCode.USAGE: (
        "bad command line: an unknown option, a bad MODULE:APP, --log-level or JSON value, "
        "a bad setting; purge without a terminal and without --yes; monitor without Textual "
        "(pip install 'taskflow[monitor]')"
    ),
    ExitCode.UNAVAILABLE: (
        "the backend cannot be reached (server down, wrong URL or login) or its driver is not "
        "installed"
    ),
    ExitCode.NOT_FOUND: (
        "no task with that id (cancel, requeue: at least one of the ids), no task of that "
        "name registered (send), no schedule of that name declared (schedules --pause, "
        "--resume), or no task of that flow stored (flow)"
    ),
    ExitCode.TASK_FAILED: (
        "the task ended failed, cancelled or expired (status); the flow ended failed or "
        "cancelled (flow)"
    ),
    ExitCode.WORKER_FAILED: (
        "the worker did not start (an on_startup hook raised), or its processes kept failing "
        "(--processes N)"
    ),
    ExitCode.NOT_SHARED: (
        "the app's backend is in memory, inside one process, so another process cannot read "
        "or change its tasks (every command but worker and db needs Redis or PostgreSQL)"
    ),
    ExitCode.ARTIFACT_NOT_FOUND: (
        "no artifact of that name to fetch: never put, still being written, deleted or "
        "expired (artifacts --fetch; the message says which and when)"
    ),
    ExitCode.PORT_IN_USE: "web: the port to listen on is taken by another process (--port)",
    ExitCode.MISSING_EXTRA: (
        "web: Starlette or uvicorn is not installed (pip install 'taskflow[web]')"
    ),
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C before it finished",
}


class CliError(Exception):
    """An error the CLI reports as one line with its own exit status."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def exit_codes_help() -> str:
    """The exit status table of ``taskflow --help``."""
    lines = ["exit status:"]
    for code, meaning in EXIT_CODE_MEANINGS.items():
        lines += textwrap.wrap(
            meaning, width=88, initial_indent=f"  {int(code):>3}  ", subsequent_indent=" " * 7
        )
    return "\n".join(lines)


def _leaf(exc: BaseException) -> BaseException:
    """The error inside (nested) exception groups of one error each; the first one otherwise."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def classify(exc: BaseException) -> tuple[ExitCode, str]:
    """The exit status and the one-line message for an error that ended a command."""
    exc = _leaf(exc)
    if isinstance(exc, CliError):
        return exc.code, exc.message
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED, "interrupted"
    if isinstance(exc, BackendUnavailable):
        return ExitCode.UNAVAILABLE, str(exc)
    if isinstance(exc, TaskNotFound | UnknownTaskError | ScheduleNotFound | FlowNotFound):
        return ExitCode.NOT_FOUND, str(exc)
    if isinstance(exc, TaskFailed):
        return ExitCode.TASK_FAILED, str(exc)
    if isinstance(exc, ArtifactNotFound):
        return ExitCode.ARTIFACT_NOT_FOUND, str(exc)
    if isinstance(
        exc,
        ConfigError
        | TaskRegistrationError
        | EncodeError
        | InvalidOption
        | InvalidArguments
        | InvalidArtifactName,
    ):
        return ExitCode.USAGE, str(exc)
    if isinstance(exc, TaskflowError):
        return ExitCode.ERROR, f"{type(exc).__name__}: {exc}"
    return (
        ExitCode.ERROR,
        f"unexpected error: {_one_line(exc)} (run with --log-level DEBUG for the traceback)",
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def format_traceback(exc: BaseException) -> str:
    """The full traceback of `exc` (for ``--log-level DEBUG``)."""
    return "".join(traceback.format_exception(exc))
