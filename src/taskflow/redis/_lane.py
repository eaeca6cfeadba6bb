"""A pipelined connection ("lane") to one Redis node, for the backend's script calls.

``redis.asyncio`` runs each command on a connection taken from its pool: acquire, pack, write,
wait for the reply, release. A script call of a few tens of microseconds on the server pays
about as much again on the client for that. A lane is one connection shared by every caller:
each call packs its command, writes it behind the others' without waiting for them, and
awaits a future answered in FIFO order by the one protocol object that parses replies (with
hiredis) as they arrive. No pool, no lock, no reader task.

The connection is opened and handed over by redis-py itself (`Connection.connect`: TLS, AUTH
or HELLO, SELECT, client name as the client's options say), then its transport is taken over
by the lane's protocol (``_redispy.py``, shared with the pub/sub listener). A pool whose
connections the lane cannot take over (a unix socket, a custom connection class,
``decode_responses``, a connect callback) gets no lane (`Lane.for_pool` returns None) and the
caller keeps using the client.

Error replies fail only their own call, as the redis-py exception the parser maps them to
(`NoScriptError` for NOSCRIPT, `ResponseError` otherwise). A lost connection fails every call
in flight with `redis.exceptions.ConnectionError`; each call is then retried whole, on a new
connection, with the client's retry policy (its backoff and number of retries): the backend's
scripts are safe to repeat after a lost reply.

What does not live here: taking the socket over from redis-py (``_redispy.py``), which scripts
run and how (``_scripts.py``, ``_storage.py``).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, Final

import hiredis
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import AbstractBackoff, ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._redispy import NOT_ENOUGH_DATA, can_take_over, new_reader, retry_backoff, take_over

__all__ = ["Lane", "LaneClosed", "pack_command"]

#: Errors after which a call is retried on a new connection (as ``retry_on_error`` in
#: ``taskflow.redis._client.make_client``).
RETRY_ERRORS: Final = (RedisConnectionError, RedisTimeoutError)
_PUSH: Final = getattr(hiredis, "PushNotification", None)
_CLOSE_WAIT_S: Final = 5.0
_CRLF: Final = b"\r\n"


class LaneClosed(RedisConnectionError):
    """The lane was closed while the call waited (or before it started)."""


def pack_command(args: tuple[Any, ...], encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """One command in RESP: ``*<n>`` then ``$<len>`` and the bytes of each argument.

    Arguments may be str (encoded), bytes, bytearray, memoryview or int (not bool, not float:
    the backend passes times as exact text).
    """
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode(encoding, errors)
        elif isinstance(arg, int) and not isinstance(arg, bool):
            data = b"%d" % arg
        elif isinstance(arg, (bytearray, memoryview)):
            data = bytes(arg)
        else:
            raise DataError(
                f"invalid argument of type {type(arg).__name__} for a Redis command: use "
                "str, bytes or int"
            )
        append(b"$%d\r\n" % len(data))
        append(data)
        append(_CRLF)
    return b"".join(parts)


class _Link(asyncio.Protocol):
    """One live connection: writes commands as they come, answers their futures in order."""

    def __init__(self, transport: asyncio.Transport, peer: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport = transport
        self.peer = peer
        self.lost = False
        self.paused = False
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.stream_writer: Any = None
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._out: list[bytes] = []
        self._drain: list[asyncio.Future[None]] = []
        self._reader = new_reader()

    # -- writing ---------------------------------------------------------------------------

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Write `packed` behind the commands before it; return its reply's future.

        With nothing in flight the command is written at once (the sequential caller's round
        trip); otherwise it joins the commands written together at the end of this loop turn
        (concurrent callers share one write).
        """
        if self.lost:
            raise RedisConnectionError(f"the connection to Redis at {self.peer} was lost")
        fut: asyncio.Future[Any] = self.loop.create_future()
        if self._out:
            self._out.append(packed)
        elif self._pending:
            self._out.append(packed)
            self.loop.call_soon(self._flush)
        else:
            self.transport.write(packed)
        self._pending.append(fut)
        return fut

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and not self.lost:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    async def wait_writable(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        while self.paused and not self.lost:
            fut: asyncio.Future[None] = self.loop.create_future()
            self._drain.append(fut)
            await fut

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        drain, self._drain = self._drain, []
        for fut in drain:
            if not fut.done():
                fut.set_result(None)

    # -- reading ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as exc:
                self.fail(RedisConnectionError(f"bad reply from Redis at {self.peer}: {exc}"))
                self.transport.abort()
                return
            if reply is NOT_ENOUGH_DATA:
                return
            if _PUSH is not None and isinstance(reply, _PUSH):
                continue  # an out-of-band push (RESP3), not the reply to a call
            if not pending:
                self.fail(RedisConnectionError(f"unexpected reply from Redis at {self.peer}"))
                self.transport.abort()
                return
            fut = pending.popleft()
            if fut.done():  # its caller gave up (cancelled or timed out)
                continue
            if isinstance(reply, Exception):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        why = f": {exc}" if exc is not None else " (closed by the server)"
        self.fail(RedisConnectionError(f"the connection to Redis at {self.peer} was lost{why}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def fail(self, error: RedisConnectionError) -> None:
        """Mark the link lost and fail every call waiting on it (each with its own copy of
        `error`)."""
        self.lost = True
        self._out = []
        pending, self._pending = self._pending, collections.deque()
        for fut in pending:
            if not fut.done():
                fut.set_exception(type(error)(*error.args))
        self._wake_drain()


class Lane:
    """A pipelined connection to one Redis node, shared by concurrent callers.

    Made by `for_pool` from a ``redis.asyncio`` connection pool, whose connection settings it
    uses; connects on first use (or `connect`), reconnects after a loss, closed by `aclose`.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        backoff: AbstractBackoff,
        retries: int,
        is_retryable: Callable[[Exception], bool] | None = None,
        socket_timeout: float | None,
        encoding: str,
        encoding_errors: str,
    ) -> None:
        self._pool = pool
        self._backoff = backoff
        self._retries = retries
        self._is_retryable = is_retryable
        self._timeout = socket_timeout
        self._encoding = encoding
        self._errors = encoding_errors
        self._link: _Link | None = None
        self._connect_lock = asyncio.Lock()
        self._closed = False
        self._sleepers: set[asyncio.Future[None]] = set()

    @classmethod
    def for_pool(cls, pool: ConnectionPool) -> Lane | None:
        """A lane with `pool`'s connection settings and retry policy, or None if the lane
        cannot honour them (then use the client as before)."""
        if not can_take_over(pool):
            return None
        kwargs = pool.connection_kwargs
        retry = kwargs.get("retry")
        backoff: AbstractBackoff
        retries: int
        is_retryable = None
        if isinstance(retry, Retry):
            backoff = retry_backoff(retry) or ExponentialWithJitterBackoff(0.05, 2.0)
            retries = retry.get_retries()
            is_retryable = retry.is_retryable
        else:
            backoff, retries = NoBackoff(), 0
        timeout = kwargs.get("socket_timeout")
        return cls(
            pool,
            backoff=backoff,
            retries=retries,
            is_retryable=is_retryable,
            socket_timeout=float(timeout) if timeout else None,
            encoding=str(kwargs.get("encoding", "utf-8")),
            encoding_errors=str(kwargs.get("encoding_errors", "strict")),
        )

    @property
    def closed(self) -> bool:
        """True once `aclose` was called."""
        return self._closed

    # -- calls -----------------------------------------------------------------------------

    async def execute(self, *args: Any) -> Any:
        """Run one command (its arguments str, bytes or int); its reply, or the error reply
        raised as its redis-py exception."""
        return await self.execute_packed(pack_command(args, self._encoding, self._errors))

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        """EVALSHA, as ``redis.asyncio.Redis.evalsha`` (so `Script.run` takes a lane)."""
        packed = pack_command(
            ("EVALSHA", sha, numkeys, *keys_and_args), self._encoding, self._errors
        )
        return await self.execute_packed(packed)

    async def script_load(self, source: str) -> Any:
        """SCRIPT LOAD, as ``redis.asyncio.Redis.script_load``."""
        return await self.execute("SCRIPT", "LOAD", source)

    async def execute_packed(self, packed: bytes) -> Any:
        """Send a packed command and await its reply, retrying on a lost connection."""
        link = self._link
        if link is not None and not link.lost and not link.paused and self._timeout is None:
            try:  # the fast path: a live link, nothing to wait for but the reply
                return await link.send(packed)
            except RETRY_ERRORS as exc:
                return await self._retry(packed, exc)
        try:
            return await self._attempt(packed)
        except RETRY_ERRORS as exc:
            return await self._retry(packed, exc)

    async def _retry(self, packed: bytes, error: Exception) -> Any:
        failures = 1
        while True:
            if self._closed or (self._is_retryable is not None and not self._is_retryable(error)):
                raise error
            if self._retries >= 0 and failures > self._retries:
                raise error
            await self._sleep(self._backoff.compute(failures))
            try:
                return await self._attempt(packed)
            except RETRY_ERRORS as exc:
                failures += 1
                error = exc

    async def _attempt(self, packed: bytes) -> Any:
        if self._closed:
            raise LaneClosed("the Redis lane is closed")
        link = self._link
        if link is None or link.lost:
            link = await self._connect()
        fut = link.send(packed)
        if link.paused:
            await link.wait_writable()
        if self._timeout is None:
            return await fut
        try:
            async with asyncio.timeout(self._timeout):
                return await fut
        except TimeoutError:
            # A reply this late: like redis-py, give up on the connection (and retry).
            link.fail(RedisConnectionError(f"Redis at {link.peer} did not answer in time"))
            link.transport.abort()
            raise RedisTimeoutError(f"Timeout reading from {link.peer}") from None

    async def _sleep(self, delay: float) -> None:
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(delay, _resolve, fut)
        self._sleepers.add(fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._sleepers.discard(fut)

    # -- connecting ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection now (otherwise the first call does)."""
        await self._connect()

    async def _connect(self) -> _Link:
        async with self._connect_lock:
            link = self._link
            if link is not None and not link.lost:
                return link
            if self._closed:
                raise LaneClosed("the Redis lane is closed")
            # TLS, AUTH or HELLO, SELECT, CLIENT SETNAME: as the client's options say.
            link = await take_over(
                self._pool,
                _Link,
                closed=lambda: self._closed,
                closed_error=lambda: LaneClosed("the Redis lane is closed"),
            )
            self._link = link
            return link

    # -- closing ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection; calls still waiting fail with `LaneClosed`."""
        self._closed = True
        for fut in list(self._sleepers):
            if not fut.done():
                fut.set_exception(LaneClosed("the Redis lane was closed"))
        link, self._link = self._link, None
        if link is None:
            return
        link.fail(LaneClosed("the Redis lane was closed while the call waited for its reply"))
        link.transport.close()
        try:
            async with asyncio.timeout(_CLOSE_WAIT_S):
                await link.closed
        except TimeoutError:
            link.transport.abort()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
