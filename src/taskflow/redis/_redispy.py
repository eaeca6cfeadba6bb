"""Every use of redis-py's private parts, behind small named functions.

The backend's protocol-level connections (the lane, ``_lane.py``; the pub/sub listener on a
single node, ``_listener.py``) need three things redis-py does not offer publicly: its error
reply parser (`new_reader`: ``redis._parsers.base.BaseParser.parse_error``), its connection's
streams and parser, to take the socket over (`take_over`: ``Connection._reader``, ``_writer``,
``_parser``), and a `Retry`'s backoff (`retry_backoff`: ``Retry._backoff``). They are used
nowhere else, and `missing_internals` lists those that a redis-py version lacks (a test runs it,
so an upgrade that changes them fails with the attribute's name; ``pyproject.toml`` bounds the
``redis`` pin to the majors checked).

Taking a socket over: redis-py opens the connection (`Connection.connect`: TLS, AUTH or HELLO,
SELECT, client name as the client's options say); then its transport is handed to an
``asyncio.Protocol`` of ours that parses with hiredis, and redis-py's connection object forgets
the socket. Used by the lane (script calls, ``_lane.py``) and by the pub/sub listener on a
single node (``_listener.py``). A pool whose connections cannot be taken over (a unix socket or
another custom connection class, ``decode_responses``, a connect callback) makes `can_take_over`
False: the caller then keeps using redis-py.

What does not live here: the client and its public options (``_client.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar, cast

import hiredis
import redis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import Connection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import AbstractBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse

__all__ = [
    "NOT_ENOUGH_DATA",
    "TakenOver",
    "can_take_over",
    "missing_internals",
    "new_reader",
    "peer",
    "retry_backoff",
    "take_over",
]

#: What `new_reader`'s ``gets()`` returns while no whole reply has arrived yet.
NOT_ENOUGH_DATA: Final = object()


def new_reader() -> hiredis.Reader:
    """A hiredis reply parser as redis-py's would be: a protocol error raises
    `InvalidResponse`; an error reply comes back as the redis-py exception it maps to
    (``NoScriptError``, ``ResponseError``...), not raised."""
    return hiredis.Reader(
        protocolError=InvalidResponse,
        replyError=BaseParser.parse_error,
        notEnoughData=NOT_ENOUGH_DATA,
    )


class TakenOver(Protocol):
    """What `take_over` needs of the protocol it hands the transport to."""

    #: The asyncio stream writer redis-py made: it closes the transport when collected, so
    #: the protocol keeps it for as long as the connection lives.
    stream_writer: Any


P = TypeVar("P", bound=TakenOver)


def can_take_over(pool: ConnectionPool) -> bool:
    """True if `pool`'s connections can be taken over with their settings honoured."""
    if not issubclass(pool.connection_class, Connection):  # e.g. a unix socket
        return False
    kwargs = pool.connection_kwargs
    return not (kwargs.get("decode_responses") or kwargs.get("redis_connect_func"))


async def take_over(
    pool: ConnectionPool,
    make_protocol: Callable[[asyncio.Transport, str], P],
    *,
    closed: Callable[[], bool],
    closed_error: Callable[[], Exception],
) -> P:
    """Open a connection with `pool`'s settings and hand its transport to
    ``make_protocol(transport, peer)``; that protocol gets every byte from then on.

    Raises ``closed_error()`` (and leaves no socket) if ``closed()`` became true while the
    connection was being opened, and redis-py's ``ConnectionError`` if it was lost before the
    takeover.
    """
    conn: Connection = pool.make_connection()  # type: ignore[no-untyped-call]
    conn.retry = Retry(NoBackoff(), 0)  # the callers retry (and back off) themselves
    try:
        await conn.connect()  # type: ignore[no-untyped-call]
    except BaseException:  # cancelled mid-handshake: leave no socket behind
        await conn.disconnect(nowait=True)
        raise
    reader, writer = _streams(conn)
    if closed() or reader is None or writer is None:
        await conn.disconnect()
        raise closed_error()
    transport = cast(asyncio.Transport, writer.transport)
    if transport.is_closing() or reader.at_eof():  # lost before the takeover
        await conn.disconnect()
        raise RedisConnectionError(f"the connection to Redis at {peer(conn)} was lost")
    _forget_socket(conn)
    protocol = make_protocol(transport, peer(conn))
    protocol.stream_writer = writer
    transport.set_protocol(cast(asyncio.BaseProtocol, protocol))
    return protocol


def peer(conn: Connection) -> str:
    """``host:port`` of `conn`, for messages."""
    port = getattr(conn, "port", "")
    return f"{conn.host}:{port}" if port else str(conn.host)


def _streams(conn: Connection) -> tuple[asyncio.StreamReader | None, asyncio.StreamWriter | None]:
    """The asyncio streams of a connected redis-py connection (None before it connected)."""
    return conn._reader, conn._writer


def _forget_socket(conn: Connection) -> None:
    """Make redis-py's connection forget its socket (its parser and streams), so that closing
    the connection object later leaves the socket, which the protocol now owns, alone."""
    conn._parser.on_disconnect()  # type: ignore[no-untyped-call]
    conn._reader = conn._writer = None


def retry_backoff(retry: Retry) -> AbstractBackoff | None:
    """The backoff of a redis-py `Retry` (it has no public getter), or None."""
    backoff = getattr(retry, "_backoff", None)
    return backoff if isinstance(backoff, AbstractBackoff) else None


def missing_internals() -> list[str]:
    """What this module uses of redis-py's private parts and the installed version lacks, one
    message each (empty: all there)."""
    missing: list[str] = []
    version = redis.__version__
    where = "taskflow.redis._redispy"

    def need(ok: bool, name: str) -> None:
        if not ok:
            missing.append(
                f"redis-py {version} has no {name}, which {where} relies on: adapt that module "
                "or keep the `redis` pin in pyproject.toml below this version"
            )

    need(
        callable(getattr(BaseParser, "parse_error", None)),
        "redis._parsers.base.BaseParser.parse_error",
    )
    conn = Connection()
    for name in ("_reader", "_writer", "_parser"):
        need(hasattr(conn, name), f"Connection.{name}")
    parser = getattr(conn, "_parser", None)
    need(callable(getattr(parser, "on_disconnect", None)), "Connection._parser.on_disconnect()")
    need(
        callable(getattr(ConnectionPool, "make_connection", None)), "ConnectionPool.make_connection"
    )
    pool = ConnectionPool()
    need(hasattr(pool, "connection_kwargs"), "ConnectionPool.connection_kwargs")
    need(hasattr(pool, "connection_class"), "ConnectionPool.connection_class")
    backoff = NoBackoff()
    need(retry_backoff(Retry(backoff, 1)) is backoff, "Retry._backoff")
    return missing
