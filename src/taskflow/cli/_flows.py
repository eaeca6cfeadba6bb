"""``taskflow flow``: a flow's state, each of its tasks and the roll-up, from a shell.

``--watch`` follows it until it ends (`FlowHandle.watch`: the event streams of its queues, and a
re-read at least every second), printing the roll-up line at each change; ``--json`` prints the
status as one JSON document (one per change with ``--watch``). The exit status says how it ended:
0 succeeded (or still running, without ``--watch``), 5 failed or cancelled, 4 unknown flow.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from .._app import QueueTasks
from .._flow_status import FlowState, FlowStatus, NodeStatus
from ._common import shared_app
from ._errors import ExitCode
from ._show import emit_json

__all__ = ["flow", "flow_data", "flow_text"]


def flow(args: argparse.Namespace) -> int:
    """``taskflow flow``: show one flow, or follow it until it ends (``--watch``)."""
    app = shared_app(args.app, "flow")
    return anyio.run(_flow, app, args.flow_id, args.watch, args.json)


async def _flow(app: QueueTasks, flow_id: str, watch: bool, as_json: bool) -> int:
    async with app:
        handle = await app.get_flow(flow_id)
        if not watch:
            status = await handle.status()
            _show(status, as_json, whole=True)
            return _exit_for(status)
        last: FlowStatus | None = None
        async for status in handle.watch():
            _show(status, as_json, whole=status.state.final)
            last = status
    assert last is not None  # watch yields at least once
    return _exit_for(last)


def _exit_for(status: FlowStatus) -> int:
    failed = status.state in (FlowState.FAILED, FlowState.CANCELLED)
    return ExitCode.TASK_FAILED if failed else ExitCode.OK


def _show(status: FlowStatus, as_json: bool, *, whole: bool) -> None:
    if as_json:
        emit_json(flow_data(status))
    elif whole:
        print(flow_text(status), flush=True)
    else:
        print(f"{status.state.value}: {status.summary}", flush=True)


def flow_data(status: FlowStatus) -> dict[str, Any]:
    """A flow's status as JSON-ready data (the ``--json`` form)."""
    return {
        "flow_id": status.flow_id,
        "state": status.state.value,
        "summary": status.summary,
        "counts": {
            field: getattr(status.counts, field) for field in status.counts.__struct_fields__
        },
        "nodes": [
            {
                "node": n.node,
                "task_id": n.task_id,
                "task": n.task,
                "queue": n.queue,
                "status": n.status.value,
                "state": n.state,
                "attempts": n.attempts,
                "waits_for": n.waits_for,
                "reason": n.reason,
                "finished_at": n.finished_at,
            }
            for n in status.nodes
        ],
    }


def flow_text(status: FlowStatus) -> str:
    """A flow's status for people: a heading with the roll-up, then one line per task."""
    width = max((len(n.node) for n in status.nodes), default=4)
    lines = [f"flow {status.flow_id}: {status.state.value}, {status.summary}"]
    lines += [_node_line(n, width) for n in status.nodes]
    return "\n".join(lines)


def _node_line(node: NodeStatus, width: int) -> str:
    line = f"  {node.node:<{width}}  {node.status.value:<9}  {node.task_id}"
    return f"{line}  {node.reason}" if node.reason else line
