"""The routes that change something: sign in and out, submit a task from the form, cancel a
task, requeue dead letters, purge a queue, pause or resume a schedule.

Every one goes through `Sessions` first: refused on a read-only server (no token), without the
session's CSRF token, or (but for sign-in) when not signed in, before the body is read.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from .. import __version__
from .._app import QueueTasks
from .._exceptions import (
    EncodeError,
    InvalidArguments,
    InvalidOption,
    ScheduleNotFound,
    UnknownTaskError,
)
from ..cli._common import app_queues
from ._forms import convert_arguments, task_type
from ._json import ApiError, json_body, json_response
from ._session import Sessions

__all__ = ["FORM_OPTIONS", "Actions"]

#: The send options a form may set (`CallOptions`): JSON values all. Not a connection (a
#: driver object), nor links that only the library sets (parent, order, locks, headers).
FORM_OPTIONS: Final = frozenset(
    {
        "queue",
        "priority",
        "retries",
        "retry_backoff",
        "timeout",
        "expires",
        "delay",
        "eta",
        "task_id",
        "dedup_key",
        "dedup_ttl",
        "idempotency_key",
    }
)


def _field(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = body.get(name, default)
    if not isinstance(value, kind):
        raise ApiError(400, "bad_request", f"{name!r} must be a JSON {kind.__name__}")
    return value


class Actions:
    """The mutating routes over one app, guarded by `sessions`."""

    def __init__(self, app: QueueTasks, sessions: Sessions) -> None:
        self.app = app
        self.sessions = sessions

    async def _now(self) -> float:
        await self.app.lifecycle.ensure_open()
        return self.app.clock.time()

    # -- the session -----------------------------------------------------------------------

    async def session(self, request: Request) -> Response:
        sessions = self.sessions
        data: dict[str, Any] = {
            "app": self.app.name,
            "backend": self.app.storage.describe(),
            "read_only": sessions.read_only,
            "signed_in": False,
            "csrf": None,
            "queues": app_queues(self.app),
            "version": __version__,
        }
        if sessions.read_only:
            return json_response(data)
        session = sessions.read(request)
        fresh = session is None
        if session is None:
            session = sessions.new(signed_in=False)
        data.update(signed_in=session.signed_in, csrf=sessions.csrf(session))
        response = json_response(data)
        if fresh:
            sessions.set_cookie(response, request, session)
        return response

    async def login(self, request: Request) -> Response:
        self.sessions.check_csrf(request)
        body = await json_body(request)
        if not self.sessions.token_matches(body.get("token")):
            raise ApiError(
                401, "not_signed_in", "wrong token: give the token the server was started with"
            )
        return self._new_session(request, signed_in=True)

    async def logout(self, request: Request) -> Response:
        self.sessions.check_csrf(request)
        return self._new_session(request, signed_in=False)

    def _new_session(self, request: Request, *, signed_in: bool) -> Response:
        session = self.sessions.new(signed_in=signed_in)
        response = json_response({"signed_in": signed_in, "csrf": self.sessions.csrf(session)})
        self.sessions.set_cookie(response, request, session)
        return response

    # -- tasks -----------------------------------------------------------------------------

    async def task_types(self, request: Request) -> Response:
        default = self.app.config.default_queue
        items = [task_type(d, default) for _, d in sorted(self.app.tasks.items())]
        return json_response({"items": items})

    async def submit(self, request: Request) -> Response:
        self.sessions.guard(request)
        body = await json_body(request)
        name = _field(body, "name", str, "")
        definition = self.app.tasks.get(name)
        if definition is None:
            raise ApiError(404, "not_found", f"no task named {name!r} is registered on this app")
        args = _field(body, "args", list, [])
        kwargs = _field(body, "kwargs", dict, {})
        options = _field(body, "options", dict, {})
        refused = sorted(set(options) - FORM_OPTIONS)
        if refused:
            raise ApiError(
                422,
                "invalid_arguments",
                f"options {refused} cannot be set from the form; use {sorted(FORM_OPTIONS)}",
            )
        await self._now()
        try:
            args, kwargs = convert_arguments(definition, args, kwargs)
            handle = await self.app.add_task(name, args, kwargs, **options)
        except (InvalidArguments, InvalidOption, EncodeError, UnknownTaskError) as exc:
            raise ApiError(422, "invalid_arguments", str(exc)) from exc
        return json_response({"task_id": handle.task_id}, status=201)

    async def cancel(self, request: Request) -> Response:
        self.sessions.guard(request)
        await self._now()
        result = await self.app.cancel(request.path_params["task_id"])
        return json_response({"result": result.value})

    async def requeue(self, request: Request) -> Response:
        self.sessions.guard(request)
        ids = _field(await json_body(request), "ids", list, [])
        if not ids or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, "bad_request", "'ids' must be a non-empty list of task ids")
        await self._now()
        handles = await self.app.requeue(ids)
        return json_response({"new_ids": [None if h is None else h.task_id for h in handles]})

    async def purge(self, request: Request) -> Response:
        self.sessions.guard(request)
        now = await self._now()
        purged = await self.app.broker.purge(request.path_params["queue"], now=now)
        return json_response({"purged": purged})

    async def pause(self, request: Request) -> Response:
        return await self._set_paused(request, True)

    async def resume(self, request: Request) -> Response:
        return await self._set_paused(request, False)

    async def _set_paused(self, request: Request, paused: bool) -> Response:
        self.sessions.guard(request)
        name = request.path_params["name"]
        try:
            if paused:
                await self.app.pause_schedule(name)
            else:
                await self.app.resume_schedule(name)
        except ScheduleNotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from exc
        return json_response({"name": name, "paused": paused})
