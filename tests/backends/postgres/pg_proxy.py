"""A TCP proxy between PostgreSQL clients and the test server that can lose one statement's reply.

`ReplyLosingProxy` forwards bytes both ways, on the running event loop. Armed with
`lose_reply_of(marker)`, it watches the first connection whose client sends `marker` (a piece
of a statement's text, which travels in the statement's Parse message): the server's messages
on it are forwarded until the statement's first row or completion (``D`` or ``C``); from then on
they are held back, and at the following ReadyForQuery (``Z``: the server has committed the
statement) the connection is cut both ways (or, asked not to, it stays open and silent until
`cut_held`). The client sees a connection closed in the middle of
its call, after the server did the work: a reply lost in transit, at a point no timing can miss.

Clients must connect without TLS (``sslmode=disable``, see `ReplyLosingProxy.dsn`): the proxy
reads the protocol's messages in clear. What does not live here: anything about taskflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["ReplyLosingProxy", "reply_losing_proxy"]

_CHUNK = 65536


class _Watch:
    """One armed loss: the marker to look for, whether to cut the connection, and the event
    set once a reply was lost."""

    def __init__(self, marker: bytes, cut: bool) -> None:
        self.marker = marker
        self.cut = cut
        self.lost = asyncio.Event()
        #: Cuts the picked connection (set once one is picked).
        self.cut_now: Callable[[], None] | None = None


class ReplyLosingProxy:
    """Listens on 127.0.0.1 (`port`) and forwards every connection to `upstream_dsn`'s server.

    Args:
        upstream_dsn: The real server's DSN (its host and port are where the proxy connects).
    """

    def __init__(self, upstream_dsn: str) -> None:
        parts = urlsplit(upstream_dsn)
        self._upstream_dsn = upstream_dsn
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 5432
        self._server: asyncio.Server | None = None
        self._armed: _Watch | None = None
        self._last: _Watch | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        #: Connections cut so far (each lost one reply).
        self.cuts = 0

    @property
    def port(self) -> int:
        """The port the proxy listens on (after `start`)."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def dsn(self) -> str:
        """`upstream_dsn` pointed at the proxy, TLS off (the proxy reads the messages)."""
        parts = urlsplit(self._upstream_dsn)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.port}" if user else f"127.0.0.1:{self.port}"
        query = f"{parts.query}&sslmode=disable" if parts.query else "sslmode=disable"
        return urlunsplit(parts._replace(netloc=netloc, query=query))

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        if self._server is not None:
            self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    def lose_reply_of(self, marker: bytes, *, cut: bool = True) -> asyncio.Event:
        """Lose the reply of the next statement whose text contains `marker` (on any
        connection); returns an event set once the server committed it. With `cut` the
        connection is then cut; without, it stays open and silent (the client waits until it
        gives up on its own, or `cut_held` is called)."""
        self._armed = self._last = _Watch(marker, cut)
        return self._armed.lost

    def cut_held(self) -> None:
        """Cut the connection whose reply the last `lose_reply_of` holds."""
        watch = self._last
        if watch is not None and watch.cut_now is not None:
            self.cuts += 1
            watch.cut_now()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self._host, self._port)
        except OSError:
            client_w.close()
            return
        watch: list[_Watch] = []  # the loss this connection was picked for, if any

        def cut() -> None:
            client_w.close()
            server_w.close()

        up = asyncio.ensure_future(self._upstream(client_r, server_w, watch, cut))
        down = asyncio.ensure_future(self._downstream(server_r, client_w, watch, cut))
        self._pumps |= {up, down}
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
            down.cancel()
            cut()
            self._pumps -= {up, down}

    async def _upstream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        watch: list[_Watch],
        cut: Callable[[], None],
    ) -> None:
        """Client to server, picking this connection for the armed loss when its marker
        passes (before it is forwarded, so the reply cannot pass first)."""
        while data := await reader.read(_CHUNK):
            armed = self._armed
            if armed is not None and not watch and armed.marker in data:
                self._armed = None
                armed.cut_now = cut
                watch.append(armed)
            writer.write(data)
            await writer.drain()

    async def _downstream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        watch: list[_Watch],
        cut: Callable[[], None],
    ) -> None:
        """Server to client; on a picked connection, message by message (see the module)."""
        pending = b""
        holding = False
        while data := await reader.read(_CHUNK):
            if not watch:
                writer.write(data)
                await writer.drain()
                continue
            pending += data
            forward = b""
            while len(pending) >= 5:
                kind = pending[:1]
                (length,) = struct.unpack("!i", pending[1:5])
                if len(pending) < 1 + length:
                    break
                message, pending = pending[: 1 + length], pending[1 + length :]
                if kind in (b"D", b"C"):
                    holding = True
                if not holding:
                    forward += message
                elif kind == b"Z" and not watch[0].lost.is_set():  # committed, unheard
                    watch[0].lost.set()
                    if watch[0].cut:
                        writer.write(forward)
                        self.cuts += 1
                        cut()
                        return
            writer.write(forward)
            await writer.drain()


@contextlib.asynccontextmanager
async def reply_losing_proxy(upstream_dsn: str) -> AsyncIterator[ReplyLosingProxy]:
    """A started `ReplyLosingProxy` to `upstream_dsn`, closed on exit."""
    proxy = ReplyLosingProxy(upstream_dsn)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
