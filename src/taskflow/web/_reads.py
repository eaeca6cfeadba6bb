"""The read-only routes of the web API: queues, a queue's tasks and dead letters, a task (its
events and artifacts), workers, the error log, locks, schedules. Each answers one page of JSON
from at most a few backend round trips; none loads a whole queue (see ``_paging``).

What does not live here: changes (``_actions``), the submission form (``_forms``), artifact
downloads (``_download``), the live stream (``_stream``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .._app import QueueTasks
from .._message import LockState, QueueStats, TaskRecord
from ..cli._artifacts import artifact_data
from ..cli._common import app_queues
from ..cli._observe import error_data, worker_data
from ._json import ApiError, json_response, limit_of
from ._paging import task_events, task_page
from ._shapes import event_data, schedule_data, task_data, task_summary

__all__ = ["Reads"]


def _since(request: Request) -> float | None:
    raw = request.query_params.get("since")
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"since={raw!r}: give seconds since the epoch") from None


def _offset(request: Request) -> int:
    raw = request.query_params.get("offset", "0")
    if not raw.isdigit():
        raise ApiError(400, "bad_request", f"offset={raw!r}: give a whole number >= 0")
    return int(raw)


class Reads:
    """The read routes over one app (opened on first use, on the server's event loop)."""

    def __init__(self, app: QueueTasks) -> None:
        self.app = app

    async def _now(self) -> float:
        """Open the app here if needed; the app's time now."""
        await self.app.lifecycle.ensure_open()
        return self.app.clock.time()

    def queues_of(self, request: Request) -> list[str]:
        """The queues a request names (``?queues=a,b``), else every queue the app knows."""
        raw = request.query_params.get("queues")
        if raw:
            return [q for q in (part.strip() for part in raw.split(",")) if q]
        return app_queues(self.app)

    async def record(self, task_id: str) -> TaskRecord:
        """The task's record.

        Raises:
            ApiError: 404 if no task has that id.
        """
        record = await self.app.get(task_id)
        if record is None:
            raise ApiError(
                404, "not_found", f"no task with id {task_id!r} on {self.app.storage.describe()}"
            )
        return record

    async def queues(self, request: Request) -> Response:
        now = await self._now()
        stats = await self.app.broker.stats(self.queues_of(request), now=now)
        return json_response({"queues": [_stats(s) for s in stats], "at": now})

    async def queue_tasks(self, request: Request) -> Response:
        now = await self._now()
        params = request.query_params
        page = await task_page(
            self.app.storage,
            request.path_params["queue"],
            after=params.get("after"),
            limit=limit_of(request),
            now=now,
            name=params.get("name") or None,
            status=params.get("status") or None,
        )
        return json_response(
            {
                "items": [
                    {**task_summary(r), "events_after": page.before.get(r.id)} for r in page.records
                ],
                "next": page.next,
                "cursor": page.cursor,
                "scanned": page.scanned,
            }
        )

    async def dead(self, request: Request) -> Response:
        await self._now()
        limit, offset = limit_of(request), _offset(request)
        found = await self.app.broker.dead_letters(
            request.path_params["queue"], limit=limit, offset=offset
        )
        following = str(offset + limit) if len(found) == limit else None
        return json_response({"items": [task_summary(r) for r in found], "next": following})

    async def task(self, request: Request) -> Response:
        await self._now()
        record = await self.record(request.path_params["task_id"])
        return json_response(await self._whole(record))

    async def _whole(self, record: TaskRecord) -> dict[str, Any]:
        failed = await self.app.errors(task=record.name, queues=[record.queue], limit=500)
        artifacts = await self.app.result(record.id).artifacts()
        return {
            **task_data(record),
            "failed_attempts": [
                error_data(f, with_traceback=True) for f in failed if f.task_id == record.id
            ],
            "artifacts": [artifact_data(a) for a in artifacts],
        }

    async def search(self, request: Request) -> Response:
        await self._now()
        query = request.query_params.get("q", "").strip()
        record = await self.app.get(query) if query else None
        return json_response({"task": None if record is None else await self._whole(record)})

    async def events(self, request: Request) -> Response:
        await self._now()
        record = await self.record(request.path_params["task_id"])
        page = await task_events(
            self.app.storage,
            record.queue,
            record.id,
            after=request.query_params.get("after"),
            limit=limit_of(request),
        )
        return json_response(
            {
                "items": [event_data(e) for e in page.events],
                "next": page.next,
                "cursor": page.cursor,
            }
        )

    async def artifacts(self, request: Request) -> Response:
        await self._now()
        found = await self.app.result(request.path_params["task_id"]).artifacts()
        return json_response({"items": [artifact_data(a) for a in found]})

    async def workers(self, request: Request) -> Response:
        now = await self._now()
        return json_response({"items": [worker_data(w, now) for w in await self.app.workers()]})

    async def errors(self, request: Request) -> Response:
        await self._now()
        params = request.query_params
        queue = params.get("queue")
        found = await self.app.errors(
            since=_since(request),
            task=params.get("name") or None,
            queues=None if not queue else [queue],
            limit=limit_of(request),
        )
        return json_response({"items": [error_data(f, with_traceback=True) for f in found]})

    async def locks(self, request: Request) -> Response:
        now = await self._now()
        states = await self.app.coordination.lock_states(now=now)
        return json_response({"items": [_lock(s) for s in states]})

    async def schedules(self, request: Request) -> Response:
        await self._now()
        return json_response({"items": [schedule_data(s) for s in await self.app.schedules()]})


def _stats(stats: QueueStats) -> dict[str, Any]:
    return {
        "queue": stats.queue,
        "queued": stats.queued,
        "scheduled": stats.scheduled,
        "running": stats.running,
        "waiting": stats.waiting,
        "dead": stats.dead,
        "finished_last_minute": stats.finished_last_minute,
    }


def _lock(state: LockState) -> dict[str, Any]:
    return {
        "name": state.name,
        "holders": [
            {"owner": h.owner, "mode": h.mode.value, "token": h.token, "expires_at": h.expires_at}
            for h in state.holders
        ],
        "waiters": [
            {"owner": w.owner, "mode": w.mode.value, "since": w.since, "expires_at": w.expires_at}
            for w in state.waiters
        ],
    }
