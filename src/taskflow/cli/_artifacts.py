"""``taskflow artifacts``: list a task's artifacts, or fetch one into a file (or stdout).

The listing reads the artifacts' records from the backend's key-value space; a fetch streams
the bytes from the app's artifact store through `AsyncResult.fetch_artifact_to` (or, to
stdout, `AsyncResult.fetch_artifact`), so it counts as a complete fetch (and a
``delete_after_fetch`` artifact is deleted) only once it was written whole.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

import anyio

from .._app import QueueTasks
from .._artifact_records import ArtifactInfo
from ._common import shared_app
from ._errors import CliError, ExitCode
from ._show import emit_json

__all__ = ["artifacts"]


def artifacts(args: argparse.Namespace) -> int:
    """``taskflow artifacts``: list a task's artifacts, or fetch one (``--fetch NAME -o PATH``)."""
    if args.output is not None and args.fetch is None:
        raise CliError(ExitCode.USAGE, "-o/--output goes with --fetch NAME")
    if args.fetch is not None and args.output is None:
        raise CliError(
            ExitCode.USAGE,
            f"--fetch {args.fetch} needs -o PATH: the file to write (or -o - for stdout)",
        )
    app = shared_app(args.app, "artifacts")
    if args.fetch is not None:
        return anyio.run(_fetch, app, args.task_id, args.fetch, args.output, args.json)
    return anyio.run(_list, app, args.task_id, args.json)


async def _list(app: QueueTasks, task_id: str, as_json: bool) -> int:
    async with app:
        found = await app.result(task_id).artifacts()
        if not found and await app.get(task_id) is None:
            raise CliError(
                ExitCode.NOT_FOUND,
                f"no task with id {task_id!r} on {app.storage.describe()}, and no artifacts "
                "of one: check the id, and that the app names the backend its producers use",
            )
    for info in found:
        if as_json:
            emit_json(artifact_data(info))
        else:
            print(artifact_line(info))
    if not found and not as_json:
        print(f"task {task_id} has no artifacts")
    return ExitCode.OK


async def _fetch(app: QueueTasks, task_id: str, name: str, output: str, as_json: bool) -> int:
    handle = app.result(task_id)
    async with app:
        if output == "-":
            out = sys.stdout.buffer
            async for piece in handle.fetch_artifact(name):
                out.write(piece)
            out.flush()
            return ExitCode.OK
        path = await handle.fetch_artifact_to(name, output)
        info = await handle.artifact(name)
    if as_json:
        emit_json({**artifact_data(info), "path": str(path)})
    else:
        print(f"fetched {name} ({info.size} bytes, sha256 {info.sha256}) to {path}")
    return ExitCode.OK


def artifact_data(info: ArtifactInfo) -> dict[str, Any]:
    """An artifact as JSON-ready data (times in seconds since the epoch)."""
    return {
        "task_id": info.task_id,
        "name": info.name,
        "state": info.state.value,
        "size": info.size,
        "sha256": info.sha256,
        "created_at": info.created_at,
        "ready_at": info.ready_at,
        "expires_at": info.expires_at,
        "delete_after_fetch": info.delete_after_fetch,
        "ended_at": info.ended_at,
        "ended_why": info.ended_why,
    }


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(sep=" ", timespec="seconds")


def artifact_line(info: ArtifactInfo) -> str:
    """One artifact for people: name, size, state, and when it is (or was) going."""
    if info.ended_at is not None:
        fate = f"{info.state.value} {_when(info.ended_at)}: {info.ended_why}"
    else:
        until = f"expires {_when(info.expires_at)}" if info.expires_at else "kept until deleted"
        fetch = ", deleted after its first fetch" if info.delete_after_fetch else ""
        fate = f"ready {_when(info.ready_at)}, {until}{fetch}"
    return f"{info.name}  {info.size} bytes  sha256 {info.sha256[:12]}  {fate}"
