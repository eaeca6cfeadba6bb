"""The flow route: a flow's tasks as a graph (nodes with their depth, edges from each task's
parents) and its roll-up, read in one `Storage.flow_tasks` call (what `QueueTasks.get_flow`'s
handle reads), never more."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from .._app import QueueTasks
from .._flow_status import FlowStatus, NodeStatus, flow_status
from ._json import ApiError, json_response

__all__ = ["Flows", "depths", "flow_data"]


def depths(nodes: list[NodeStatus]) -> dict[str, int]:
    """Each task's depth: 0 without parents in the flow, else one more than its deepest
    parent's (a parent outside the flow, or a cycle, counts as none)."""
    parents = {n.task_id: list(n.waits_for) for n in nodes}
    found: dict[str, int] = {}

    def depth(task_id: str, path: frozenset[str]) -> int:
        if task_id in found:
            return found[task_id]
        known = [p for p in parents.get(task_id, []) if p in parents and p not in path]
        value = 1 + max((depth(p, path | {task_id}) for p in known), default=-1)
        found[task_id] = value
        return value

    for node in nodes:
        depth(node.task_id, frozenset())
    return found


def flow_data(status: FlowStatus) -> dict[str, Any]:
    """A flow as JSON: its state, counts, summary line, nodes (with depth) and edges."""
    levels = depths(status.nodes)
    ids = set(levels)
    return {
        "flow_id": status.flow_id,
        "name": status.name,
        "state": status.state.value,
        "counts": msgspec.to_builtins(status.counts),
        "summary": status.summary,
        "nodes": [
            {**msgspec.to_builtins(node), "depth": levels[node.task_id]} for node in status.nodes
        ],
        "edges": [
            [parent, node.task_id]
            for node in status.nodes
            for parent in node.waits_for
            if parent in ids
        ],
    }


class Flows:
    """The flow route over one app."""

    def __init__(self, app: QueueTasks) -> None:
        self.app = app

    async def one(self, request: Request) -> Response:
        await self.app.lifecycle.ensure_open()
        flow_id = request.path_params["flow_id"]
        records = await self.app.storage.flow_tasks(flow_id, now=self.app.clock.time())
        if not records:
            raise ApiError(404, "not_found", f"no task of flow {flow_id!r} is stored")
        return json_response(flow_data(flow_status(flow_id, "", records)))
