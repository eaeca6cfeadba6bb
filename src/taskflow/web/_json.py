"""How the web API answers: JSON bodies (raw text, never escaped: escaping is the page's job),
the `ApiError` a handler raises for a refusal or a bad request, and reading a request's JSON
body and paging parameters. Nothing here knows a route."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "ApiError", "json_body", "json_response", "limit_of"]

#: Items per page when a request names no ``limit``, and the most one may ask for.
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500

_encoder = msgspec.json.Encoder(enc_hook=repr)


class ApiError(Exception):
    """A request the API answers with an error: an HTTP status, a code a page can test
    (``read_only``, ``csrf``, ...) and one line saying what was wrong and how to fix it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> Response:
        """The error as the API answers it: ``{"error": code, "message": ...}``."""
        return json_response({"error": self.code, "message": self.message}, status=self.status)


def json_response(data: Any, *, status: int = 200) -> Response:
    """`data` as a JSON response (values msgspec cannot encode are shown by their repr)."""
    return Response(
        _encoder.encode(data),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object body ({} when empty).

    Raises:
        ApiError: 400 if the body is not a JSON object.
    """
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_request", f"the body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return data


def limit_of(request: Request) -> int:
    """The ``limit`` query parameter (default `DEFAULT_LIMIT`), checked to be 1..`MAX_LIMIT`.

    Raises:
        ApiError: 400 for anything else.
    """
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, "bad_request", f"limit={raw!r}: give a whole number 1..{MAX_LIMIT}")
    return int(raw)
