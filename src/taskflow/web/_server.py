"""`create_app`: the web view of one taskflow app as a Starlette ASGI app, mountable under any
prefix of a user's ASGI app; its routes (WEB_API.md), its static pages, the error handling.

What does not live here: the handlers (``_reads``, ``_actions``, ``_download``, ``_stream``),
the ``taskflow web`` command (``taskflow.cli._web``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._app import QueueTasks
from .._exceptions import BackendUnavailable
from ._actions import Actions
from ._download import Downloads
from ._flows import Flows
from ._json import ApiError
from ._orders import Orders
from ._reads import Reads
from ._session import Sessions
from ._stream import LiveStream

__all__ = ["SECURITY_HEADERS", "STATIC_DIR", "SecurityHeaders", "create_app"]

#: The pages (HTML, CSS, JavaScript; no build step), served at the root of the mount.
STATIC_DIR: Final = Path(__file__).resolve().parent / "static"


#: Headers of every HTTP answer: the pages may load scripts, styles and images only from the
#: view itself (no inline script: a string that slipped into markup cannot run), talk only to
#: it (its WebSocket included), and may not be framed by another site.
SECURITY_HEADERS: Final = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
        b"form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class SecurityHeaders:
    """ASGI middleware adding `SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


async def _unknown_api(request: Request) -> Response:
    raise ApiError(404, "not_found", f"no API route {request.url.path!r}: see WEB_API.md")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _unavailable(request: Request, exc: Exception) -> Response:
    return ApiError(503, "unavailable", str(exc)).response()


def _routes(app: QueueTasks, sessions: Sessions) -> list[BaseRoute]:
    reads, actions, downloads = Reads(app), Actions(app, sessions), Downloads(app)
    orders, flows = Orders(app), Flows(app)
    get, post = ["GET"], ["POST"]
    return [
        Route("/api/session", actions.session, methods=get),
        Route("/api/login", actions.login, methods=post),
        Route("/api/logout", actions.logout, methods=post),
        Route("/api/queues", reads.queues, methods=get),
        Route("/api/queues/{queue}/tasks", reads.queue_tasks, methods=get),
        Route("/api/queues/{queue}/dead", reads.dead, methods=get),
        Route("/api/queues/{queue}/purge", actions.purge, methods=post),
        Route("/api/dead/requeue", actions.requeue, methods=post),
        Route("/api/tasks", actions.submit, methods=post),
        Route("/api/tasks/{task_id}", reads.task, methods=get),
        Route("/api/tasks/{task_id}/events", reads.events, methods=get),
        Route("/api/tasks/{task_id}/cancel", actions.cancel, methods=post),
        Route("/api/tasks/{task_id}/artifacts", reads.artifacts, methods=get),
        Route("/api/tasks/{task_id}/artifacts/{name:path}", downloads.artifact, methods=get),
        Route("/api/search", reads.search, methods=get),
        Route("/api/workers", reads.workers, methods=get),
        Route("/api/errors", reads.errors, methods=get),
        Route("/api/locks", reads.locks, methods=get),
        Route("/api/schedules", reads.schedules, methods=get),
        Route("/api/schedules/{name}/pause", actions.pause, methods=post),
        Route("/api/schedules/{name}/resume", actions.resume, methods=post),
        Route("/api/task-types", actions.task_types, methods=get),
        Route("/api/flows/{flow_id}", flows.one, methods=get),
        Route("/api/orders", orders.list, methods=get),
        Route("/api/orders/{order_id}", orders.one, methods=get),
        Route("/api/{rest:path}", _unknown_api),
        WebSocketRoute("/ws", LiveStream(app).serve),
        Mount("/", app=StaticFiles(directory=STATIC_DIR, html=True, check_dir=False)),
    ]


def create_app(app: QueueTasks, *, token: str | None = None) -> Starlette:
    """The web view of `app`: its JSON API, its live WebSocket and its pages, as an ASGI app.

    Serve it with ``taskflow web MODULE:APP`` (uvicorn), or mount it in your own ASGI app:
    ``Starlette(routes=[Mount("/tasks", app=create_app(app, token=...))])``. The app is opened
    on the serving event loop at the first request (and stays open); a memory backend is only
    visible from its own process, so serve the view there, beside the workers.

    Args:
        app: The taskflow app to show.
        token: The sign-in token. None (the default): the view is read-only and refuses every
            change. With one, a browser signed in with it may cancel, requeue, purge, pause
            and resume schedules and submit tasks (each request carrying its CSRF token).

    Raises:
        ValueError: `token` is an empty string.
    """
    sessions = Sessions(token)
    return Starlette(
        routes=_routes(app, sessions),
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={ApiError: _api_error, BackendUnavailable: _unavailable},
    )
