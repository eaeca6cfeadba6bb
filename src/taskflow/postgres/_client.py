"""How the PostgreSQL backend reaches its server: the driver, the DSN, the pool, its errors.

What lives here: the optional import of asyncpg (`require_asyncpg`), the ``?schema=`` parameter
taken out of a URL (`split_dsn`), what a driver error means (`driver_error` and `reaching` turn
it into `AuthenticationFailed` or `BackendUnavailable`, so none reaches the caller unwrapped;
`is_transient` and `breaks_connection` decide retries), the
waits between retries (`Backoff`), and `Connections`: the pool the calls run on and the fresh
connections the listener and migrations use.

What does not live here: retrying a call (`PostgresStorage.run` decides, with `Backoff`), the
growth of the pool beside the calls (``_growth.py``), the listening connection
(``_listener.py``), the SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Final, NamedTuple, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._backends import mask_password, missing_driver
from .._exceptions import AuthenticationFailed, BackendUnavailable, TaskflowError
from ._growth import PoolGrowth

try:
    import asyncpg
except ImportError:  # pragma: no cover - exercised only without the extra installed
    asyncpg = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

__all__ = [
    "Backoff",
    "Conn",
    "Connections",
    "Dsn",
    "breaks_connection",
    "connect",
    "driver_error",
    "is_transient",
    "reaching",
    "require_asyncpg",
    "split_dsn",
]

#: A connection of our own or one lent by a pool (or by the caller, for transactional enqueue).
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

T = TypeVar("T")

#: Waits between retries (seconds): the first, doubling up to the cap.
_BACKOFF_FIRST_S: Final = 0.05
_BACKOFF_CAP_S: Final = 2.0
#: Mentions every array type the hot statements take (text[] needs no introspection), so one
#: query on a new connection has asyncpg learn them all.
_ARRAY_TYPES_SQL: Final = (
    "SELECT $1::bytea[] IS NULL AND $2::int8[] IS NULL AND $3::int4[] IS NULL"
    " AND $4::float8[] IS NULL AND $5::bool[] IS NULL"
)


def require_asyncpg() -> None:
    """Raise `BackendUnavailable` saying what to install unless asyncpg is installed."""
    if asyncpg is None:
        raise missing_driver("taskflow.postgres")


class Dsn(NamedTuple):
    """A URL split into what asyncpg is given and taskflow's own ``schema`` parameter."""

    dsn: str
    schema: str | None


def split_dsn(url: str) -> Dsn:
    """Take a ``schema`` query parameter out of a URL (asyncpg would send it to the server)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return Dsn(urlunsplit(parts._replace(query=rest)), schema)


# --- what an error means ------------------------------------------------------------------------


def _cannot_connect(exc: BaseException) -> bool:
    """True for errors of opening a connection: the server is down or unknown, or it refuses
    the login (wrong user or password, a database that does not exist, no free slot)."""
    return isinstance(
        exc,
        (
            OSError,  # refused, unreachable, a host name that does not resolve
            TimeoutError,
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.CannotConnectNowError,  # starting up or shutting down
            asyncpg.exceptions.InvalidAuthorizationSpecificationError,
            asyncpg.exceptions.InvalidCatalogNameError,
            asyncpg.exceptions.TooManyConnectionsError,
        ),
    )


def _refused_login(exc: BaseException) -> bool:
    """True when the server refused the login itself (a wrong user or password): waiting does
    not help, so it is never retried."""
    return isinstance(exc, asyncpg.exceptions.InvalidAuthorizationSpecificationError)


def _is_driver_error(exc: BaseException) -> bool:
    """True for what asyncpg or the network raises (taskflow's own errors are not)."""
    return not isinstance(exc, TaskflowError) and isinstance(
        exc,
        (
            asyncpg.exceptions.PostgresError,
            asyncpg.exceptions.InterfaceError,
            asyncpg.exceptions.InternalClientError,
            OSError,
            TimeoutError,
        ),
    )


def driver_error(exc: BaseException, dsn: str) -> TaskflowError | None:
    """The taskflow error a driver error of a call to `dsn` is raised as (its ``__cause__``
    stays the driver's); None for an error that is not the driver's (raised as it is).

    A refused login is `AuthenticationFailed`; a server that cannot be reached, a connection
    lost for good, or a statement the server refused is `BackendUnavailable`. Every message
    names the server with its password masked.
    """
    if not _is_driver_error(exc):
        return None
    where = mask_password(dsn)
    what = f"{type(exc).__name__}: {exc}"
    if _refused_login(exc):
        return AuthenticationFailed(
            f"PostgreSQL at {where} refused the login ({what}); check the user and password "
            "in the URL (postgresql://user:password@host:port/database). Not retried: a "
            "wrong password does not heal by waiting"
        )
    if _cannot_connect(exc):
        return BackendUnavailable(
            f"cannot reach PostgreSQL at {where} ({what}); is the server running, and are the "
            "URL's host, port, user, password and database right "
            "(postgresql://user:password@host:port/database)?"
        )
    if is_transient(exc):
        return BackendUnavailable(
            f"lost the connection to PostgreSQL at {where} and could not get it back in time "
            f"({what}); is the server up?"
        )
    return BackendUnavailable(f"PostgreSQL at {where} refused the call ({what})")


@contextlib.asynccontextmanager
async def reaching(dsn: str) -> AsyncIterator[None]:
    """Raise a driver error of the block (a failure to connect to `dsn`, a refused login or
    statement) as `driver_error` says, naming where and why."""
    try:
        yield
    except Exception as exc:
        error = driver_error(exc, dsn)
        if error is None:
            raise
        raise error from exc


def is_transient(exc: BaseException) -> bool:
    """True for errors after which the same call may succeed on a fresh connection."""
    if asyncpg is None:
        return False
    if isinstance(exc, asyncpg.exceptions.QueryCanceledError):
        return False
    return isinstance(
        exc,
        (
            OSError,
            TimeoutError,
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, restarting server
            asyncpg.exceptions.DeadlockDetectedError,
            asyncpg.exceptions.SerializationError,
            # the server's FATAL arrived while the connection was idle in the pool
            asyncpg.exceptions.InternalClientError,
        ),
    ) or (isinstance(exc, asyncpg.exceptions.InterfaceError) and "closed" in str(exc))


def breaks_connection(exc: BaseException) -> bool:
    """True for transient errors after which the connection itself must not be reused."""
    return is_transient(exc) and not isinstance(
        exc,
        (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError),
    )


class Backoff:
    """The waits between the attempts of one retried operation: 50 ms, doubling up to 2 s."""

    __slots__ = ("attempts", "delay")

    def __init__(self) -> None:
        #: How many times `sleep` was called (the retries made so far).
        self.attempts = 0
        #: The next wait, in seconds.
        self.delay = _BACKOFF_FIRST_S

    async def sleep(self) -> None:
        """Wait the next delay, then double it (up to the cap)."""
        self.attempts += 1
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, _BACKOFF_CAP_S)


# --- connections --------------------------------------------------------------------------------


async def connect(dsn: str) -> asyncpg.Connection[asyncpg.Record]:
    """One connection to `dsn` with asyncpg's defaults (the caller closes it).

    Raises:
        BackendUnavailable: the server cannot be reached or refuses the login.
    """
    async with reaching(dsn):
        return await asyncpg.connect(dsn)


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """The pool's reset of a returned connection: nothing to undo.

    asyncpg's default resets every returned connection with one more statement (``RESET ALL``,
    ``UNLISTEN *``, advisory unlocks), a round trip the caller waits for before its call returns.
    Pooled connections here never change session state (no SET, LISTEN or session-level lock;
    transactions are always closed, and asyncpg rolls back one left open before this runs).
    """


class Connections:
    """One storage's connections to its server: a pool for the calls, fresh ones on demand.

    The pool exists between `open` and `close` (or `abandon`), and grows beside the calls
    (`PoolGrowth`). A connection made here names itself `application_name` in
    ``pg_stat_activity``, unless the DSN names one.

    Args:
        dsn: asyncpg DSN (``postgresql://user:password@host:port/database``).
        application_name: What its sessions are called in ``pg_stat_activity``.
        min_pool_size: Connections the pool keeps open.
        max_pool_size: Most connections of the pool.
        statement_cache_size: asyncpg's prepared-statement cache per connection.
    """

    def __init__(
        self,
        dsn: str,
        *,
        application_name: str,
        min_pool_size: int,
        max_pool_size: int,
        statement_cache_size: int,
    ) -> None:
        self.dsn = dsn
        self.min_pool_size = min_pool_size
        self.max_pool_size = max_pool_size
        self.statement_cache_size = statement_cache_size
        self._server_settings = (
            {} if "application_name" in dsn else {"application_name": application_name}
        )
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._growth = PoolGrowth(self._warm)

    @property
    def is_open(self) -> bool:
        """Whether the pool is there (between `open` and `close` or `abandon`)."""
        return self._pool is not None

    async def connect(self) -> asyncpg.Connection[asyncpg.Record]:
        """A new connection of its own (the caller closes it); asyncpg's errors as they are."""
        return await asyncpg.connect(
            self.dsn,
            statement_cache_size=self.statement_cache_size,
            server_settings=self._server_settings,
        )

    async def open(self) -> None:
        """Create the pool, on the running event loop.

        Raises:
            BackendUnavailable: the server cannot be reached or refuses the login.
        """
        self._growth = PoolGrowth(self._warm)
        async with reaching(self.dsn):
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_pool_size,
                max_size=self.max_pool_size,
                statement_cache_size=self.statement_cache_size,
                server_settings=self._server_settings,
                reset=_keep_session,
            )

    async def close(self) -> None:
        """Close the pool (terminating the connections that do not close within 5 s)."""
        await self._growth.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except Exception:
                pool.terminate()

    def abandon(self) -> None:
        """Drop the pool of an event loop that ended, without closing it (that needs its loop);
        the garbage collector closes its sockets."""
        self._pool = None

    async def call(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `op` once on a pooled connection; drop that connection if the error broke it.

        Raises:
            BackendUnavailable: the pool is closed.
            Exception: whatever `op` raised.
        """
        pool = self._pool
        if pool is None:
            raise BackendUnavailable("the PostgreSQL pool is closed")
        growth = self._growth
        await growth.enter(pool)
        try:
            async with pool.acquire() as conn:
                try:
                    return await op(conn)
                except Exception as exc:
                    if breaks_connection(exc):
                        # The pool opens a fresh one on the next acquire. A connection the
                        # server closed was already handed back: nothing to do.
                        with contextlib.suppress(asyncpg.exceptions.InterfaceError):
                            conn.terminate()
                    raise
        finally:
            growth.leave()

    @contextlib.asynccontextmanager
    async def lend(self) -> AsyncIterator[Conn]:
        """A pooled connection for one caller to hold across awaits (a streamed read), handed
        back when the block ends.

        Raises:
            BackendUnavailable: the pool is closed.
        """
        pool = self._pool
        if pool is None:
            raise BackendUnavailable("the PostgreSQL pool is closed")
        growth = self._growth
        await growth.enter(pool)
        try:
            async with pool.acquire() as conn:
                yield conn
        finally:
            growth.leave()

    async def _warm(self, conn: Conn) -> None:
        """Have a new pooled connection learn the array types the hot statements take (asyncpg
        introspects a type on its first use on each connection, a query of its own)."""
        await conn.fetchval(_ARRAY_TYPES_SQL, None, None, None, None, None)
