"""Taking a socket over from redis-py, for the protocol-level connections of the backend.

redis-py opens the connection (`Connection.connect`: TLS, AUTH or HELLO, SELECT, client name as
the client's options say); then its transport is handed to an ``asyncio.Protocol`` of ours that
parses with hiredis, and redis-py's connection object forgets the socket. Used by the lane
(script calls, ``_lane.py``) and by the pub/sub listener on a single node (``_listener.py``).

A pool whose connections cannot be taken over (a unix socket or another custom connection
class, ``decode_responses``, a connect callback) makes `can_take_over` False: the caller then
keeps using redis-py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import Connection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse

__all__ = ["NOT_ENOUGH_DATA", "TakenOver", "can_take_over", "new_reader", "peer", "take_over"]

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
    reader, writer = conn._reader, conn._writer
    if closed() or reader is None or writer is None:
        await conn.disconnect()
        raise closed_error()
    transport = cast(asyncio.Transport, writer.transport)
    if transport.is_closing() or reader.at_eof():  # lost before the takeover
        await conn.disconnect()
        raise RedisConnectionError(f"the connection to Redis at {peer(conn)} was lost")
    # Take the socket over from redis-py's streams: from now on the protocol gets the bytes
    # and the connection object forgets the socket.
    conn._parser.on_disconnect()  # type: ignore[no-untyped-call]
    conn._reader = conn._writer = None
    protocol = make_protocol(transport, peer(conn))
    protocol.stream_writer = writer
    transport.set_protocol(cast(asyncio.BaseProtocol, protocol))
    return protocol


def peer(conn: Connection) -> str:
    """``host:port`` of `conn`, for messages."""
    port = getattr(conn, "port", "")
    return f"{conn.host}:{port}" if port else str(conn.host)
