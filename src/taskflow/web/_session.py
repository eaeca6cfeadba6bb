"""Who may change things: the signed session cookie, sign-in with the server's token, and the
CSRF token every mutating request carries.

Without a token the server is read-only: `Sessions.guard` refuses every mutating request
(``read_only``), whatever it carries. With one, a browser signs in by posting the token; the
session cookie (``taskflow_session``: HttpOnly, SameSite=Strict, signed with a key derived from
the token, so it survives a restart with the same token) then says it is signed in, and each
mutating request must carry the session's CSRF token in the ``X-CSRF-Token`` header (a header a
cross-site form cannot set). What does not live here: the routes that use it (``_actions``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Final

from starlette.requests import HTTPConnection
from starlette.responses import Response

from ._json import ApiError

__all__ = ["COOKIE", "CSRF_HEADER", "Session", "Sessions"]

COOKIE: Final = "taskflow_session"
CSRF_HEADER: Final = "X-CSRF-Token"
#: How long a session cookie is honoured after it was issued.
MAX_AGE_S: Final = 12 * 3600


@dataclass(frozen=True)
class Session:
    """One browser's session: a random id, whether it signed in, when it was issued."""

    sid: str
    signed_in: bool
    issued_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Sessions:
    """Issues and checks session cookies and CSRF tokens for one server.

    Args:
        token: The sign-in token (None: the server is read-only).
    """

    def __init__(self, token: str | None) -> None:
        if token is not None and not token:
            raise ValueError("the web token must not be empty (give none for a read-only view)")
        self.token = token
        seed = token.encode() if token is not None else secrets.token_bytes(32)
        self._key = hmac.new(seed, b"taskflow-web-session-v1", hashlib.sha256).digest()

    @property
    def read_only(self) -> bool:
        """True when the server has no token: nothing can be changed through it."""
        return self.token is None

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def read(self, conn: HTTPConnection) -> Session | None:
        """The request's session, if its cookie is present, signed by this server and fresh."""
        raw = conn.cookies.get(COOKIE, "")
        payload, _, signature = raw.rpartition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        sid, issued, flag = [*payload.split(":"), "", "", ""][:3]
        if not issued.isdigit() or time.time() - int(issued) > MAX_AGE_S:
            return None
        return Session(sid=sid, signed_in=flag == "1" and not self.read_only, issued_at=int(issued))

    def new(self, *, signed_in: bool) -> Session:
        """A new session with a fresh id (sign-in and sign-out rotate it)."""
        signed_in = signed_in and not self.read_only
        return Session(secrets.token_urlsafe(18), signed_in, int(time.time()))

    def set_cookie(self, response: Response, conn: HTTPConnection, session: Session) -> None:
        """Set `session` as the browser's cookie, scoped to the mount's root path."""
        payload = f"{session.sid}:{session.issued_at}:{int(session.signed_in)}"
        response.set_cookie(
            COOKIE,
            f"{payload}.{self._sign(payload)}",
            max_age=MAX_AGE_S,
            path=conn.scope.get("root_path") or "/",
            httponly=True,
            samesite="strict",
            secure=conn.url.scheme in ("https", "wss"),
        )

    def csrf(self, session: Session) -> str:
        """The CSRF token of `session` (what ``X-CSRF-Token`` must hold)."""
        return self._sign(f"csrf:{session.sid}")

    def token_matches(self, candidate: object) -> bool:
        """Whether `candidate` is the server's token (compared in constant time)."""
        if self.token is None or not isinstance(candidate, str):
            return False
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def check_csrf(self, conn: HTTPConnection) -> Session:
        """The request's session, if it carries the session's CSRF token.

        Raises:
            ApiError: 403 ``read_only`` without a server token; 403 ``csrf`` otherwise.
        """
        if self.read_only:
            raise ApiError(
                403,
                "read_only",
                "this taskflow web view is read-only: start it with --token (or "
                "create_app(app, token=...)) and sign in to change anything",
            )
        session = self.read(conn)
        sent = conn.headers.get(CSRF_HEADER, "")
        if session is None or not hmac.compare_digest(sent, self.csrf(session)):
            raise ApiError(
                403,
                "csrf",
                f"missing or wrong {CSRF_HEADER} header: reload the page (GET api/session "
                "gives the token) and send it with every change",
            )
        return session

    def guard(self, conn: HTTPConnection) -> Session:
        """Let a mutating request through, or refuse it: read-only server, bad CSRF token, or
        not signed in.

        Raises:
            ApiError: 403 ``read_only``, 403 ``csrf`` or 401 ``not_signed_in``.
        """
        session = self.check_csrf(conn)
        if not session.signed_in:
            raise ApiError(401, "not_signed_in", "sign in with the server's token first")
        return session
