"""The orders routes: the active orders with their roll-up, and one order with its jobs and
failure reasons, read through a `Supervisor` of the app that never leads (it is not attached,
so it only reads the orders' records in the coordination's key-value space)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from .._app import QueueTasks
from .._exceptions import OrderNotFound
from ..supervisor import OrderStatus, Supervisor
from ._json import ApiError, json_response, limit_of

__all__ = ["Orders", "order_data"]


def order_data(status: OrderStatus) -> dict[str, Any]:
    """An order's status as JSON: state, counts, jobs by day, failures, and the summary line."""
    data: dict[str, Any] = msgspec.to_builtins(status)
    data["summary"] = status.summary
    return data


class Orders:
    """The read-only orders routes over one app."""

    def __init__(self, app: QueueTasks) -> None:
        self.app = app
        self.supervisor = Supervisor(app)

    async def list(self, request: Request) -> Response:
        await self.app.lifecycle.ensure_open()
        ids = (await self.supervisor.store.active_ids())[: limit_of(request)]
        found = []
        for order_id in ids:
            try:
                found.append(order_data(await self.supervisor.status(order_id)))
            except OrderNotFound:  # finished and removed since the list was read
                continue
        return json_response({"items": found})

    async def one(self, request: Request) -> Response:
        await self.app.lifecycle.ensure_open()
        try:
            status = await self.supervisor.status(request.path_params["order_id"])
        except OrderNotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from exc
        return json_response(order_data(status))
