"""Artifact downloads: the bytes streamed from the app's artifact store to the browser, piece
by piece, never held whole. The download is the fetch: a ``delete_after_fetch`` artifact is
deleted once it was sent whole (size and SHA-256 checked), as `AsyncResult.fetch_artifact`
does; a download cut off half-way deletes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .._app import QueueTasks
from .._exceptions import ArtifactNotFound, InvalidArtifactName
from ._json import ApiError

__all__ = ["Downloads"]


def _disposition(name: str) -> str:
    """An attachment header that carries any name (RFC 6266 ``filename*``), with a plain
    ASCII fallback."""
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\/' else "_" for c in name)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


class Downloads:
    """The artifact download route over one app."""

    def __init__(self, app: QueueTasks) -> None:
        self.app = app

    async def artifact(self, request: Request) -> Response:
        task_id, name = request.path_params["task_id"], request.path_params["name"]
        await self.app.lifecycle.ensure_open()
        handle = self.app.result(task_id)
        try:
            info = await handle.artifact(name)
            pieces = handle.fetch_artifact(name)
            first = await anext(pieces, b"")  # a missing or expired artifact fails here, as a 410
        except (ArtifactNotFound, InvalidArtifactName) as exc:
            raise ApiError(410, "gone", str(exc)) from exc

        async def body() -> AsyncIterator[bytes]:
            try:
                yield first
                async for piece in pieces:
                    yield piece
            finally:
                await pieces.aclose()

        return StreamingResponse(
            body(),
            media_type="application/octet-stream",
            headers={
                "Content-Length": str(info.size),
                "Content-Disposition": _disposition(name),
                "Cache-Control": "no-store",
            },
        )
