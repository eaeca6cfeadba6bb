"""The PostgreSQL backend on asyncpg: `PostgresBroker`, `PostgresStorage`, `PostgresCoordination`.

```python
broker = taskflow.postgres.from_url("postgresql://user:pw@host/db?schema=jobs", app="shop")
```

Each app has a schema of its own, ``<schema>_<app name>`` (``jobs_shop`` above; the base
defaults to ``taskflow``), so apps with different names on one database share nothing: tables,
NOTIFY channel (named after the schema) and migrations are per app. One row per task in
``<schema>.tasks`` holds both the message and what is known about it. A
claim is one statement that locks due rows with ``FOR UPDATE SKIP LOCKED``, recovers lapsed
leases (dead-lettering those whose attempts are spent) and hands out a higher fencing token; a
batch of outcomes is one statement that checks every token, stores the outcomes, appends the
events and sends one NOTIFY per kind. Workers and result waiters sleep on LISTEN/NOTIFY through
one listening connection per storage (`_Listener`), which reconnects with backoff: a ``w:``
notification calls the work watchers of its queues (`Broker.watch_work`), the end of a task
wakes its result waiters, and the end of a done task with a small result carries it, so its
waiters read nothing. Pooled calls retry on a
lost connection, and the pool grows beside them, one connection at a time (`_PoolGrowth`).
`enqueue(..., connection=conn)` writes inside the caller's own transaction (the outbox
pattern): the task exists, and workers hear of it, only if it commits.

The schema is created and migrated by `taskflow._pg.schema` under an advisory lock; the SQL lives
in `taskflow._pg.sql`. Times always come from the caller (`now`), never from the server's clock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from ._backends import DEFAULT_APP, mask_password
from ._exceptions import BackendUnavailable
from ._message import (
    CancelResult,
    Delivery,
    EnqueueResult,
    ErrorInfo,
    Event,
    EventKind,
    Lease,
    LeaseInfo,
    LeaseState,
    Outcome,
    OutcomeKind,
    Progress,
    ProgressUpdate,
    QueueStats,
    TaskMessage,
    TaskOutcome,
    TaskRecord,
    TaskStatus,
    Versioned,
    decode_message,
    encode_message,
)
from .abc import Broker, Coordination, ReadCoalescer, Storage

try:
    import asyncpg
except ImportError:  # pragma: no cover - exercised only without the extra installed
    asyncpg = None  # type: ignore[assignment]

from ._pg.schema import app_schema, migrate, quote_schema
from ._pg.sql import Statements

if TYPE_CHECKING:
    from ._pg.schema import Conn

__all__ = [
    "PostgresBroker",
    "PostgresCoordination",
    "PostgresStorage",
    "app_schema",
    "channel_name",
    "from_url",
    "upgrade",
]

logger = logging.getLogger("taskflow.postgres")

T = TypeVar("T")

_INSTALL_HINT: Final = 'the PostgreSQL backend needs asyncpg: pip install "taskflow[postgres]"'
_DEFAULT_SCHEMA: Final = "taskflow"
_CLEANUP_CHUNK: Final = 10_000
#: Reconnect backoff of pooled calls and of the listener (seconds): doubles up to the cap.
_BACKOFF_FIRST_S: Final = 0.05
_BACKOFF_CAP_S: Final = 2.0
#: How many times a pooled call is retried after a lost connection (about 15 s in all).
_CALL_RETRIES: Final = 10
#: How often the listener checks that its connection still answers, and how long it waits for
#: the answer: a connection lost without a word (a dead host, a network partition) shows no other
#: way, and while it lasts no notification arrives.
_LISTENER_CHECK_S: Final = 5.0
_LISTENER_ANSWER_S: Final = 2.0
#: Most tasks remembered as sent here and not heard to end (see `PostgresStorage.expect_end`).
_MAX_UNFINISHED: Final = 10_000

#: Mentions every array type the hot statements take (text[] needs no introspection), so one
#: query on a new connection has asyncpg learn them all.
_ARRAY_TYPES_SQL: Final = (
    "SELECT $1::bytea[] IS NULL AND $2::int8[] IS NULL AND $3::int4[] IS NULL"
    " AND $4::float8[] IS NULL AND $5::bool[] IS NULL"
)

_error_encoder: Final = msgspec.msgpack.Encoder()
_error_decoder: Final = msgspec.msgpack.Decoder(ErrorInfo)
_progress_decoder: Final = msgspec.msgpack.Decoder(Progress)
_LEASE_EXPIRED: Final = _error_encoder.encode(
    ErrorInfo(
        "LeaseExpired",
        "the lease lapsed with no attempt left: the worker stopped renewing it (it probably "
        "died, or its event loop was blocked for longer than the lease)",
    )
)


def _require_asyncpg() -> None:
    if asyncpg is None:
        raise BackendUnavailable(_INSTALL_HINT)


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


@contextlib.asynccontextmanager
async def _reaching(dsn: str) -> AsyncIterator[None]:
    """Turn a failure to connect to `dsn` into `BackendUnavailable`, saying where and why."""
    try:
        yield
    except Exception as exc:
        if not _cannot_connect(exc):
            raise
        raise BackendUnavailable(
            f"cannot reach PostgreSQL at {mask_password(dsn)} ({type(exc).__name__}: {exc}); "
            "is the server running, and are the URL's host, port, user, password and database "
            "right (postgresql://user:password@host:port/database)?"
        ) from exc


def _is_transient(exc: BaseException) -> bool:
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


def _breaks_connection(exc: BaseException) -> bool:
    """True for transient errors after which the connection itself must not be reused."""
    return _is_transient(exc) and not isinstance(
        exc,
        (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError),
    )


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """The pool's reset of a returned connection: nothing to undo.

    asyncpg's default resets every returned connection with one more statement (``RESET ALL``,
    ``UNLISTEN *``, advisory unlocks), a round trip the caller waits for before its call returns.
    Pooled connections here never change session state (no SET, LISTEN or session-level lock;
    transactions are always closed, and asyncpg rolls back one left open before this runs).
    """


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema (channels are database-wide, so it names it)."""
    name = f"taskflow_{schema}"
    if len(name) > 63:
        name = "taskflow_" + hashlib.sha256(schema.encode()).hexdigest()[:40]
    return name


def _split_dsn(url: str) -> tuple[str, str | None]:
    """Take a ``schema`` query parameter out of a URL (asyncpg would send it to the server)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def from_url(url: str, *, app: str = DEFAULT_APP, **options: Any) -> PostgresBroker:
    """A `PostgresBroker` (with its `PostgresStorage`) for a ``postgresql://`` URL.

    Args:
        url: ``postgresql://`` or ``postgres://`` DSN; a ``?schema=`` parameter picks the base
            of the schema name.
        app: The app's name; its tables live in the schema ``<schema>_<app>``.
        **options: ``schema`` (default ``"taskflow"``), ``min_pool_size`` (1),
            ``max_pool_size`` (10), ``statement_cache_size`` (asyncpg's; 0 behind pgbouncer
            in transaction mode).

    Raises:
        BackendUnavailable: asyncpg is not installed.
        ConfigError: `app` cannot name an app, or the schema name would be too long.
        ValueError: the URL is not a PostgreSQL URL, or an option is unknown.
    """
    _require_asyncpg()
    scheme = urlsplit(url).scheme
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(
            f"taskflow.postgres.from_url({url!r}): the scheme must be postgresql:// or postgres://"
        )
    dsn, schema_in_url = _split_dsn(url)
    schema = options.pop("schema", None) or schema_in_url or _DEFAULT_SCHEMA
    known = {"min_pool_size", "max_pool_size", "statement_cache_size"}
    unknown = set(options) - known
    if unknown:
        raise ValueError(
            f"taskflow.postgres.from_url: unknown option(s) {sorted(unknown)}; "
            f"known: schema, {', '.join(sorted(known))}"
        )
    return PostgresBroker(PostgresStorage(dsn, schema=schema, app=app, **options))


async def upgrade(
    dsn: str,
    schema: str = _DEFAULT_SCHEMA,
    *,
    app: str = DEFAULT_APP,
    target: int | None = None,
) -> int:
    """Create or migrate the tables of app `app` (schema ``<schema>_<app>``) by hand (deploy
    scripts, a CLI); a broker also does it when it opens.

    Idempotent and safe to run while workers start (an advisory lock serializes upgraders).
    `target` stops at an older version (for tests of in-place upgrades). Returns the version
    the schema is at afterwards.

    Raises:
        BackendUnavailable: asyncpg is not installed, or the server cannot be reached or
            refuses the login.
        ConfigError: `app` cannot name an app, or the schema name would be too long.
    """
    _require_asyncpg()
    dsn, schema_in_url = _split_dsn(dsn)
    name = app_schema(schema_in_url or schema, app)
    async with _reaching(dsn):
        conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, name, target=target)
    finally:
        await conn.close()


# --- rows to structs ----------------------------------------------------------------------------


def _decode_error(data: bytes | None) -> ErrorInfo | None:
    return None if data is None else _error_decoder.decode(data)


def _encode_error(error: ErrorInfo | None) -> bytes | None:
    return None if error is None else _error_encoder.encode(error)


def _event_detail(outcome: Outcome) -> str | None:
    """An outcome's event detail: the error's type (none for a release)."""
    if outcome.error is None or outcome.kind is OutcomeKind.RELEASE:
        return None
    return outcome.error.type


def _task_record(row: asyncpg.Record, now: float) -> TaskRecord:
    expires = row["result_expires_at"]
    expired = expires is not None and expires <= now
    progress = row["progress"]
    return TaskRecord(
        id=row["id"],
        name=row["name"],
        queue=row["queue"],
        status=TaskStatus(row["status"]),
        priority=row["priority"],
        attempts=row["attempts"],
        retries=row["retries"],
        created_at=row["created_at"],
        eta=row["eta"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        result=None if expired else row["result"],
        error=_decode_error(row["error"]),
        progress=None if progress is None else _progress_decoder.decode(progress),
        yields=list(row["yields"]),
        parent_id=row["parent_id"],
        order_id=row["order_id"],
        requeued_from=row["requeued_from"],
        dedup_key=row["dedup_key"],
        store_result=row["store_result"],
        cancel_requested=row["cancel_requested"],
        result_expires_at=expires,
        result_expired=expired,
        token=row["token"],
        worker_id=row["worker_id"],
    )


def _enqueue_args(messages: Sequence[TaskMessage]) -> list[list[Any]]:
    """The parallel column arrays of the enqueue statement ($1..$15)."""
    columns: list[list[Any]] = [[] for _ in range(15)]
    for m in messages:
        for column, value in zip(
            columns,
            (
                m.id,
                m.name,
                m.queue,
                encode_message(m),
                m.priority,
                m.eta,
                m.created_at,
                m.retries,
                m.expires_at,
                m.dedup_key,
                m.dedup_ttl_s,
                m.store_result,
                m.parent_id,
                m.order_id,
                m.requeued_from,
            ),
            strict=True,
        ):
            column.append(value)
    return columns


# --- the pool's growth ---------------------------------------------------------------------------


class _PoolGrowth:
    """Grows the pool beside the calls, so that no call waits for a connection to be opened.

    asyncpg opens a connection for a call that finds none idle, on that call's path: a TCP and
    authentication handshake, then the introspection of the array types its first statement
    takes (several milliseconds, tens on a busy host). In a burst, each overlapping call opened
    its own and waited for it, which lengthened the burst and made the next overlap likelier:
    in the latency benchmark the producer's pool went from 1 to 10 connections in 150 ms, and
    those calls made its p99. Here a call that finds every connection busy waits for the first
    to come free (usually within a round trip), while one new connection is opened and warmed
    beside it, and is then there for the next burst; the pool grows one connection at a time
    while the demand lasts. A pool with no connection at all (a restarted server) connects on
    the call's path, as before.
    """

    def __init__(self, warm: Callable[[Conn], Awaitable[object]]) -> None:
        #: Calls that passed `enter` and have not `leave`-d yet.
        self.in_flight = 0
        self._warm = warm
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._opening: asyncio.Task[None] | None = None
        self._opener_holds = False  # the opener holds a connection (a new one, being warmed)
        self._may_open = True  # False after an opening failed, until a call ends

    async def enter(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        while True:
            size = pool.get_size()
            busy = self.in_flight + self._opener_holds
            if busy < size or size == 0 or size >= pool.get_max_size():
                break
            if self._opening is None and self._may_open:
                self._opening = asyncio.create_task(self._open_one(pool))
            turn = asyncio.get_running_loop().create_future()
            self._waiters.append(turn)
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._wake_one()  # given the turn, then cancelled: pass it on
                raise
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        self._may_open = True
        self._wake_one()

    async def close(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._opening

    async def _open_one(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        try:
            async with pool.acquire() as conn:
                self._opener_holds = True
                await self._warm(conn)
        except Exception:
            self._may_open = False
            logger.debug("opening a pooled connection ahead of need failed", exc_info=True)
        finally:
            self._opener_holds = False
            self._opening = None
            self._wake_one()

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return


# --- the listener -------------------------------------------------------------------------------


class _Listener:
    """This storage's one LISTEN connection, re-established with backoff when it is lost.

    Payloads are ``<kind>:,item,item...``: ``t`` task ids that reached a terminal state, ``d``
    done tasks with their small result (``<result expiry>;<base64 result>;<id>``), ``w`` queues
    with new or rescheduled work (claimable now or later), ``e`` queues with new events.
    """

    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: How many times the LISTEN connection was (re-)established.
        self.generation = 0

    async def ensure_started(self) -> None:
        """Connect and LISTEN (once); later calls return at once."""
        if self._supervisor is not None:
            return
        async with self._lock:
            if self._supervisor is None:
                await self._connect()
                self._supervisor = asyncio.create_task(
                    self._supervise(), name="taskflow-postgres-listener"
                )

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
            self._supervisor = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except Exception:  # a dead connection cannot say goodbye; drop it
                conn.terminate()

    async def _connect(self) -> None:
        conn = await self._storage._connect()
        try:
            await conn.add_listener(self._storage.channel, self._on_notification)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        self._lost.clear()
        self.generation += 1

    def _on_notification(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._storage._dispatch(str(payload))

    @property
    def connected(self) -> bool:
        """Whether notifications are being heard right now."""
        conn = self._conn
        return conn is not None and not self._lost.is_set() and not conn.is_closed()

    def _on_terminated(self, conn: object) -> None:
        if conn is self._conn:  # not an old connection we already replaced
            self._lost.set()
            self._storage._forget_unfinished()

    async def _supervise(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), _LISTENER_CHECK_S)
            except TimeoutError:
                pass
            if not self._lost.is_set() and await self._answers():
                continue
            logger.warning("LISTEN connection lost; reconnecting")
            await self._reconnect()

    async def _answers(self) -> bool:
        """Whether the listening connection still answers a query in time."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            await asyncio.wait_for(conn.execute("SELECT 1"), _LISTENER_ANSWER_S)
        except Exception:  # no answer in time, or the connection broke while asking
            return False
        return True

    async def _reconnect(self) -> None:
        self._storage._forget_unfinished()
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                await self._connect()
            except Exception as exc:
                if not _is_transient(exc):
                    logger.exception("LISTEN reconnect failed; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_CAP_S)
                continue
            logger.info("LISTEN connection re-established")
            # Notifications sent while we were away are lost: wake everyone who might care.
            self._storage._after_listener_gap()
            return


# --- storage ------------------------------------------------------------------------------------


class PostgresStorage(Storage):
    """Task records, results and events in PostgreSQL tables; the LISTEN connection and the pool.

    Args:
        dsn: asyncpg DSN (``postgresql://user:password@host:port/database``).
        schema: The base of the schema's name.
        app: The app's name. The tables live in the schema ``<schema>_<app>`` (created and
            migrated on `open`), `schema` below.
        min_pool_size: Connections the pool keeps open.
        max_pool_size: Most connections of the pool.
        statement_cache_size: asyncpg's prepared-statement cache per connection (0 disables it,
            needed behind pgbouncer in transaction mode).
    """

    shared_across_processes = True
    scheme = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = _DEFAULT_SCHEMA,
        app: str = DEFAULT_APP,
        min_pool_size: int = 1,
        max_pool_size: int = 10,
        statement_cache_size: int = 100,
    ) -> None:
        _require_asyncpg()
        super().__init__()
        self.dsn = dsn
        self.app = app
        #: The schema of the app's tables, ``<schema>_<app>``.
        self.schema = app_schema(schema, app)
        self.channel = channel_name(self.schema)
        self.sql = Statements(quote_schema(self.schema))
        self._pool_sizes = (min_pool_size, max_pool_size)
        self._statement_cache_size = statement_cache_size
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._listener: _Listener | None = None
        #: Per queue: how many work / event notifications this process has heard.
        self.work_seq: dict[str, int] = {}
        self.event_seq: dict[str, int] = {}
        #: How many times the listener was down (notifications may have been missed).
        self.gaps = 0
        #: Per queue: events this process appended since it last trimmed that queue's stream.
        self._events_since_trim: dict[str, int] = {}
        #: The result waiters' reads of one loop turn, made as one statement (rows by id).
        self._row_reads: ReadCoalescer[str, asyncpg.Record | None] = ReadCoalescer(self._fetch_rows)
        self._reset_session()

    def _reset_session(self) -> None:
        """Start afresh what is bound to one open on one event loop: the wake-up event, the
        background tasks, the pool's growth, and the tasks whose end this open's listener is
        expected to hear."""
        self._changed = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._growth = _PoolGrowth(self._warm)
        self._row_reads.forget()
        #: The workers watching for work (`PostgresBroker.watch_work`): worker id -> (queues,
        #: callback), and the callbacks by queue.
        self._work_watchers: dict[str, tuple[list[str], Callable[[], None]]] = {}
        self._work_callbacks: dict[str, list[Callable[[], None]]] = {}
        #: Tasks sent from here while the listener was up, whose end it has not heard yet
        #: (oldest first, at most `_MAX_UNFINISHED`): see `expect_end`.
        self._unfinished: dict[str, None] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    async def _open(self) -> None:
        self._reset_session()
        async with _reaching(self.dsn):
            conn = await self._connect()
        try:
            await migrate(conn, self.schema)
        finally:
            await conn.close()
        async with _reaching(self.dsn):
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._pool_sizes[0],
                max_size=self._pool_sizes[1],
                statement_cache_size=self._statement_cache_size,
                server_settings=self._server_settings(),
                reset=_keep_session,
            )
        self._listener = _Listener(self)

    def describe(self) -> str:
        return f"{mask_password(self.dsn)} (schema {self.schema!r})"

    async def _close(self) -> None:
        for task in list(self._background):
            task.cancel()
        self._row_reads.close()
        await self._growth.close()
        if self._listener is not None:
            await self._listener.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except Exception:
                pool.terminate()
        self._listener = None
        self._wake()

    def _abandon(self) -> None:
        # The pool and the listener of the ended loop are dropped, not closed (that needs
        # their loop); the garbage collector closes their sockets.
        self._pool = None
        self._listener = None

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record]:
        return await asyncpg.connect(
            self.dsn,
            statement_cache_size=self._statement_cache_size,
            server_settings=self._server_settings(),
        )

    def _server_settings(self) -> dict[str, str]:
        """Name our sessions ``taskflow/<schema>`` in pg_stat_activity, unless the DSN does."""
        if "application_name" in self.dsn:
            return {}
        return {"application_name": self.application_name}

    @property
    def application_name(self) -> str:
        """The ``application_name`` of this storage's connections (for pg_stat_activity)."""
        return f"taskflow/{self.schema}"[:63]

    async def _warm(self, conn: Conn) -> None:
        """Have a new pooled connection learn the array types the hot statements take (asyncpg
        introspects a type on its first use on each connection, a query of its own)."""
        await conn.fetchval(_ARRAY_TYPES_SQL, None, None, None, None, None)

    async def run(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `op` on a pooled connection, retrying with backoff if the connection was lost
        (the pool replaces dead connections; a restarted server is waited for ~15 s)."""
        delay = _BACKOFF_FIRST_S
        attempt = 0
        while True:
            pool = self._pool
            if pool is None:
                self._check_open()
                raise BackendUnavailable("the PostgreSQL pool is closed")
            try:
                await self._growth.enter(pool)
                try:
                    async with pool.acquire() as conn:
                        try:
                            return await op(conn)
                        except Exception as exc:
                            if _breaks_connection(exc):
                                # The pool opens a fresh one on the next acquire. A connection
                                # the server closed was already handed back: nothing to do.
                                with contextlib.suppress(asyncpg.exceptions.InterfaceError):
                                    conn.terminate()
                            raise
                finally:
                    self._growth.leave()
            except Exception as exc:
                if not _is_transient(exc) or attempt >= _CALL_RETRIES or not self.is_open:
                    raise
                attempt += 1
                logger.warning(
                    "PostgreSQL call failed (%s: %s); retry %d in %.2fs",
                    type(exc).__name__,
                    exc,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_CAP_S)

    # -- notifications --------------------------------------------------------------------------

    async def listen(self) -> None:
        """Start this storage's LISTEN connection if it does not run yet (notifications sent
        before it listens are not heard: start it before reading what they would announce)."""
        if self._listener is not None:
            await self._listener.ensure_started()

    async def _ensure_listening(self) -> None:
        await self.listen()

    def _dispatch(self, payload: str) -> None:
        """Handle one NOTIFY payload from the listener."""
        kind, _, body = payload.partition(":")
        items = [item for item in body.split(",") if item]
        if kind == "d":
            unfinished = self._unfinished
            for item in items:
                expires, result, task_id = item.split(";", 2)
                unfinished.pop(task_id, None)
                if task_id in self.waiters:
                    self.waiters.wake(task_id, _pushed_done(task_id, expires, result))
        elif kind == "t":
            unfinished = self._unfinished
            for task_id in items:
                unfinished.pop(task_id, None)
                self.waiters.wake(task_id)
        elif kind in ("w", "e"):
            self.bump(items, work=kind == "w")

    def bump(self, queues: Sequence[str], *, work: bool) -> None:
        """Record that `queues` have new events (and new work if `work`: their work watchers
        are called), and wake sleepers."""
        for queue in queues:
            self.event_seq[queue] = self.event_seq.get(queue, 0) + 1
            if work:
                self.work_seq[queue] = self.work_seq.get(queue, 0) + 1
                for callback in self._work_callbacks.get(queue, ()):
                    callback()
        self._wake()

    def add_work_watcher(
        self, worker_id: str, queues: Sequence[str], callback: Callable[[], None]
    ) -> None:
        """Call `callback` for every ``w:`` notification of `queues` (and every local enqueue
        there), and once after each listener gap, until `remove_work_watcher`."""
        self.remove_work_watcher(worker_id)
        self._work_watchers[worker_id] = (list(queues), callback)
        for queue in queues:
            self._work_callbacks.setdefault(queue, []).append(callback)

    def remove_work_watcher(self, worker_id: str) -> None:
        """End `add_work_watcher` for `worker_id`."""
        watched = self._work_watchers.pop(worker_id, None)
        if watched is None:
            return
        queues, callback = watched
        for queue in queues:
            callbacks = self._work_callbacks.get(queue, [])
            if callback in callbacks:
                callbacks.remove(callback)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self, ready: Callable[[], bool]) -> None:
        """Sleep until `ready()` holds, re-checked after each notification."""
        while not ready():
            changed = self._changed
            await changed.wait()
            if not self.is_open:
                return

    # -- tasks known to be unfinished -----------------------------------------------------------

    def expect_end(self, task_ids: Iterable[str]) -> None:
        """Remember tasks about to be sent from here, if the listener is up: until their end
        is heard, a result waiter's first read could only find them unfinished, so it is
        skipped (their end's notification wakes the waiter, and carries the outcome or has it
        read).

        Called before the insert is sent, so an end heard before its reply is not missed.
        """
        if self._listener is None or not self._listener.connected:
            return
        unfinished = self._unfinished
        for task_id in task_ids:
            unfinished[task_id] = None
        while len(unfinished) > _MAX_UNFINISHED:
            del unfinished[next(iter(unfinished))]

    def not_sent(self, task_ids: Iterable[str]) -> None:
        """Forget tasks `expect_end` remembered that were not inserted after all."""
        for task_id in task_ids:
            self._unfinished.pop(task_id, None)

    def _forget_unfinished(self) -> None:
        """The listener is lost: ends may go unheard, so every first read happens again."""
        self._unfinished.clear()

    def heard_end(self, task_id: str) -> None:
        """`task_id` ended (this process wrote its end, or heard of it): wake its result
        waiters, which read how."""
        self._unfinished.pop(task_id, None)  # ended: a read now finds how
        self.waiters.wake(task_id)

    def _after_listener_gap(self) -> None:
        """After the listener reconnected: wake every sleeper and every work watcher once, and
        settle the result waiters whose tasks ended while we could not hear it."""
        self.gaps += 1
        self._wake()
        for _, callback in list(self._work_watchers.values()):
            callback()
        if len(self.waiters):
            task = asyncio.create_task(self._recheck_waiters())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _recheck_waiters(self) -> None:
        ids = self.waiters.task_ids()
        try:
            rows = await self.run(lambda conn: conn.fetch(self.sql.get_many, ids))
        except Exception:  # the server is still away: the next reconnect checks again
            logger.warning("could not re-read the tasks result waiters wait for", exc_info=True)
            return
        for row in rows:
            if TaskStatus(row["status"]).terminal:
                self.heard_end(row["id"])

    # -- records --------------------------------------------------------------------------------

    async def _get_many(self, task_ids: Sequence[str], now: float) -> list[TaskRecord | None]:
        rows = await self._fetch_rows(list(task_ids))
        return [None if row is None else _task_record(row, now) for row in rows]

    async def _get_outcomes(self, task_ids: Sequence[str], now: float) -> list[TaskOutcome | None]:
        """The result waiters' reads: coalesced per loop turn (a thousand results awaited at
        once cost one statement), and none for a task known to be unfinished (`expect_end`)."""
        unfinished = self._unfinished
        if all(task_id in unfinished for task_id in task_ids):
            return [TaskOutcome(id=task_id, status=TaskStatus.QUEUED) for task_id in task_ids]
        rows = await self._row_reads.read_many(task_ids)
        return [None if row is None else TaskOutcome.of(_task_record(row, now)) for row in rows]

    async def _fetch_rows(self, task_ids: list[str]) -> list[asyncpg.Record | None]:
        """Each task's row, or None, in one statement."""
        rows = await self.run(lambda conn: conn.fetch(self.sql.get_many, task_ids))
        by_id = {row["id"]: row for row in rows}
        return [by_id.get(task_id) for task_id in task_ids]

    async def _report(self, updates: Sequence[ProgressUpdate], now: float) -> list[bool]:
        # Several updates of one attempt in a batch are merged: an UPDATE touches a row once.
        merged: dict[tuple[str, int], tuple[Progress | None, list[bytes]]] = {}
        for u in updates:
            progress, yields = merged.get((u.task_id, u.token), (None, []))
            merged[(u.task_id, u.token)] = (u.progress or progress, [*yields, *u.yields])
        keys = list(merged)
        progresses = [merged[k][0] for k in keys]
        yield_values: list[bytes] = []
        yield_owner: list[int] = []
        for ordinal, key in enumerate(keys, start=1):
            for value in merged[key][1]:
                yield_values.append(value)
                yield_owner.append(ordinal)
        args = (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [None if p is None else _error_encoder.encode(p) for p in progresses],
            [None if p is None else _progress_detail(p) for p in progresses],
            yield_values,
            yield_owner,
            now,
            self.channel,
        )
        rows = await self.run(lambda conn: conn.fetch(self.sql.report, *args))
        applied = {keys[row["ord"] - 1]: bool(row["ok"]) for row in rows}
        return [applied[(u.task_id, u.token)] for u in updates]

    # -- events ---------------------------------------------------------------------------------

    async def _read_events(self, queue: str, after: str | None, limit: int) -> list[Event]:
        cursor = _parse_cursor(after)
        rows = await self.run(lambda conn: conn.fetch(self.sql.read_events, queue, cursor, limit))
        return [
            Event(
                cursor=str(row["id"]),
                task_id=row["task_id"],
                queue=row["queue"],
                kind=EventKind(row["kind"]),
                at=row["at"],
                attempt=row["attempt"],
                order_id=row["order_id"],
                detail=row["detail"],
                name=row["name"],
            )
            for row in rows
        ]

    async def _latest_cursor(self, queue: str) -> str | None:
        newest = await self.run(lambda conn: conn.fetchval(self.sql.latest_event, queue))
        return None if newest is None else str(newest)

    async def _wait_events(self, queue: str, after: str | None) -> None:
        await self._ensure_listening()
        seen = (self.gaps, self.event_seq.get(queue, 0))
        cursor = _parse_cursor(after)
        exists = await self.run(
            lambda conn: conn.fetchval(self.sql.has_events_after, queue, cursor)
        )
        if exists:
            return
        await self.wait_changed(lambda: (self.gaps, self.event_seq.get(queue, 0)) != seen)

    # -- maintenance ----------------------------------------------------------------------------

    async def _cleanup(self, now: float, keep_s: float) -> int:
        deleted = 0
        while True:
            status = await self.run(
                lambda conn: conn.execute(self.sql.cleanup_tasks, now - keep_s, _CLEANUP_CHUNK)
            )
            count = int(status.split()[-1])
            deleted += count
            if count < _CLEANUP_CHUNK:
                break
        await self.trim_events()
        return deleted

    async def count_events(self, queues: Iterable[str]) -> None:
        """Count events just appended to `queues`; trim a queue's stream back to about
        `events_maxlen` once this process added a tenth of that since its last trim."""
        threshold = max(1, self.events_maxlen // 10)
        counts = self._events_since_trim
        full: list[str] = []
        for queue in queues:
            counts[queue] = counts.get(queue, 0) + 1
            if counts[queue] == threshold:
                full.append(queue)
        for queue in full:
            counts[queue] = 0
            try:
                await self._trim_queue_events(queue)
            except Exception:  # the change itself is stored; trimming waits for the next round
                logger.warning("could not trim the event stream of queue %r", queue, exc_info=True)

    async def trim_events(self) -> None:
        """Keep about `events_maxlen` events per queue."""
        queues = await self.run(lambda conn: conn.fetch(self.sql.event_queues))
        for row in queues:
            await self._trim_queue_events(row["queue"])

    async def _trim_queue_events(self, queue: str) -> None:
        await self.run(lambda conn: conn.execute(self.sql.trim_events, queue, self.events_maxlen))


def _pushed_done(task_id: str, expires: str, result: str) -> TaskOutcome:
    """What a ``d:`` notification tells a result waiter: the whole outcome, so it reads
    nothing."""
    return TaskOutcome(
        id=task_id,
        status=TaskStatus.DONE,
        result=base64.b64decode(result) if result else None,
        result_expires_at=float(expires) if expires else None,
    )


def _progress_detail(progress: Progress) -> str:
    total = "?" if progress.total is None else str(progress.total)
    return f"{progress.done}/{total}"


def _parse_cursor(after: str | None) -> int:
    if after is None:
        return 0
    try:
        return int(after)
    except ValueError:
        raise ValueError(
            f"event cursor {after!r} is not a PostgreSQL event cursor: pass the `cursor` of an "
            "Event read from this backend, None to start at the oldest kept event, or "
            "taskflow.abc.LATEST for only what comes next"
        ) from None


# --- coordination -------------------------------------------------------------------------------


class PostgresCoordination(Coordination):
    """Leases and key-value records in the app schema's ``leases`` and ``kv`` tables, through
    the storage's pool (opened and closed by the broker, after and before the storage).

    Args:
        storage: The `PostgresStorage` of the same database.
    """

    def __init__(self, storage: PostgresStorage) -> None:
        self._pg = storage

    # -- leases -----------------------------------------------------------------------------------

    async def _acquire_lease(self, name: str, owner: str, ttl_s: float, now: float) -> int | None:
        token = await self._pg.run(
            lambda conn: conn.fetchval(self._pg.sql.acquire_lease, name, owner, now, ttl_s)
        )
        return None if token is None else int(token)

    async def _renew_lease(
        self, name: str, owner: str, token: int, ttl_s: float, now: float
    ) -> bool:
        status = await self._pg.run(
            lambda conn: conn.execute(self._pg.sql.renew_lease, name, owner, token, now, ttl_s)
        )
        return status.endswith(" 1")

    async def _release_lease(self, name: str, owner: str, token: int) -> bool:
        status = await self._pg.run(
            lambda conn: conn.execute(self._pg.sql.release_lease, name, owner, token)
        )
        return status.endswith(" 1")

    async def _get_lease(self, name: str, now: float) -> LeaseInfo | None:
        row = await self._pg.run(lambda conn: conn.fetchrow(self._pg.sql.get_lease, name, now))
        if row is None:
            return None
        return LeaseInfo(
            name=name, owner=row["owner"], token=row["token"], expires_at=row["expires_at"]
        )

    # -- key-value records ----------------------------------------------------------------------

    async def _kv_get(self, namespace: str, key: str) -> Versioned | None:
        row = await self._pg.run(lambda conn: conn.fetchrow(self._pg.sql.kv_get, namespace, key))
        return None if row is None else Versioned(bytes(row["value"]), int(row["version"]))

    async def _kv_set(
        self, namespace: str, key: str, value: bytes, expect_version: int | None
    ) -> int | None:
        args: tuple[Any, ...]
        if expect_version is None:
            sql, args = self._pg.sql.kv_upsert, (namespace, key, value)
        elif expect_version == 0:
            sql, args = self._pg.sql.kv_create, (namespace, key, value)
        else:
            sql, args = self._pg.sql.kv_replace, (namespace, key, value, expect_version)
        version = await self._pg.run(lambda conn: conn.fetchval(sql, *args))
        return None if version is None else int(version)

    async def _kv_list(self, namespace: str) -> dict[str, Versioned]:
        rows = await self._pg.run(lambda conn: conn.fetch(self._pg.sql.kv_list, namespace))
        return {row["key"]: Versioned(bytes(row["value"]), int(row["version"])) for row in rows}

    async def _kv_delete(self, namespace: str, key: str) -> bool:
        status = await self._pg.run(
            lambda conn: conn.execute(self._pg.sql.kv_delete, namespace, key)
        )
        return status.endswith(" 1")


# --- broker -------------------------------------------------------------------------------------


class PostgresBroker(Broker):
    """Moves messages through ``<schema>.tasks``: SKIP LOCKED claims, fenced batched completes.

    Args:
        storage: The `PostgresStorage` of the same database (opened with the broker).
    """

    storage: PostgresStorage
    coordination: PostgresCoordination

    def __init__(self, storage: PostgresStorage) -> None:
        super().__init__(storage, PostgresCoordination(storage))
        self.pg = storage
        #: Per queue: the next due time the last claim there read, with the counters (listener
        #: gaps, work notifications) seen when that claim began. `next_due` answers from it,
        #: with no round trip, while nothing was announced since and this process changed
        #: nothing. What others change unannounced cannot make it late: they end or extend
        #: leases (the answer is early: one idle claim), or claim tasks that were pending when
        #: it was read (so already counted in it) or announced since (so it is read again).
        self._due_after_claim: dict[str, tuple[int, int, float | None]] = {}

    async def _open(self) -> None:
        # A new open may have missed notifications: its workers start from a fresh look.
        self._due_after_claim = {}

    # -- enqueue --------------------------------------------------------------------------------

    async def _enqueue(self, messages: Sequence[TaskMessage], now: float) -> list[EnqueueResult]:
        self.pg.expect_end(m.id for m in messages)
        try:
            results = await self.pg.run(lambda conn: self._insert(conn, messages, now))
        except BaseException:
            self.pg.not_sent(m.id for m in messages)
            raise
        self.pg.not_sent(m.id for m, r in zip(messages, results, strict=True) if not r.created)
        created = [m.queue for m, r in zip(messages, results, strict=True) if r.created]
        if created:
            self.pg.bump(sorted(set(created)), work=True)  # same-process workers: no NOTIFY wait
            await self.pg.count_events(created)
        return results

    async def _enqueue_in(
        self, connection: Any, messages: Sequence[TaskMessage], now: float
    ) -> list[EnqueueResult]:
        if not hasattr(connection, "fetch") or not hasattr(connection, "transaction"):
            raise BackendUnavailable(
                f"options(connection=...) needs an asyncpg connection (inside your transaction), "
                f"not {type(connection).__name__}: `async with conn.transaction(): "
                "await task.options(connection=conn).add_task(...)`"
            )
        return await self._insert(connection, messages, now)

    async def _insert(
        self, conn: Conn, messages: Sequence[TaskMessage], now: float
    ) -> list[EnqueueResult]:
        """Insert a batch (one statement; a second one only for messages that collided)."""
        rows = await conn.fetch(self.pg.sql.enqueue, *_enqueue_args(messages), now, self.pg.channel)
        results: list[EnqueueResult | None] = []
        seen: set[str] = set()
        unresolved: list[int] = []
        for index, row in enumerate(rows):
            task_id = row["id"]
            if row["created"] and task_id not in seen:
                results.append(EnqueueResult(task_id, True))
            elif row["by_id"] is not None:
                results.append(EnqueueResult(row["by_id"], False))
            else:
                results.append(None)
                unresolved.append(index)
            seen.add(task_id)
        if unresolved:
            await self._resolve_conflicts(conn, messages, unresolved, results)
        return [r for r in results if r is not None]

    async def _resolve_conflicts(
        self,
        conn: Conn,
        messages: Sequence[TaskMessage],
        unresolved: list[int],
        results: list[EnqueueResult | None],
    ) -> None:
        picked = [messages[i] for i in unresolved]
        rows = await conn.fetch(
            self.pg.sql.enqueue_conflicts,
            [m.id for m in picked],
            [m.queue for m in picked],
            [m.dedup_key for m in picked],
        )
        for index, row in zip(unresolved, rows, strict=True):
            results[index] = EnqueueResult(row["existing"] or messages[index].id, False)

    # -- claim, extend, complete ----------------------------------------------------------------

    async def _claim(
        self, queues: Sequence[str], limit: int, lease_s: float, now: float, worker_id: str
    ) -> list[Delivery]:
        await self.pg.listen()
        gaps = self.pg.gaps
        seen = {q: self.pg.work_seq.get(q, 0) for q in queues}
        deliveries: list[Delivery] = []
        lease_until = now + lease_s
        for queue in dict.fromkeys(queues):
            room = limit - len(deliveries)
            if room <= 0:
                break
            claimed, due = await self._claim_queue(queue, room, lease_until, now, worker_id)
            deliveries += claimed
            self._due_after_claim[queue] = (gaps, seen[queue], due)
        return deliveries

    async def _claim_queue(
        self, queue: str, limit: int, lease_until: float, now: float, worker_id: str
    ) -> tuple[list[Delivery], float | None]:
        """One claim statement on one queue; settles the lapsed tasks it dead-lettered.

        Returns the deliveries and the queue's next due time after the claim."""
        rows = await self.pg.run(
            lambda conn: conn.fetch(
                self.pg.sql.claim,
                queue,
                now,
                limit,
                lease_until,
                worker_id,
                _LEASE_EXPIRED,
                self.result_ttl_s,
                self.pg.channel,
            )
        )
        deliveries: list[Delivery] = []
        taken = 0
        for row in rows:
            if row["id"] is None:  # an empty claim: the row carries only the next due time
                continue
            taken += 1
            if row["status"] == "running":
                deliveries.append(
                    Delivery(row["id"], row["token"], row["attempts"], row["data"], lease_until)
                )
            else:
                self.pg.heard_end(row["id"])
        await self.pg.count_events([queue] * taken)
        due = rows[0]["next_due"]
        return deliveries, None if due is None else float(due)

    async def _extend(
        self, leases: Sequence[Lease], lease_s: float, now: float
    ) -> list[LeaseState]:
        self._due_after_claim.clear()
        unique = list(dict.fromkeys((lease.task_id, lease.token) for lease in leases))
        args = ([k[0] for k in unique], [k[1] for k in unique], now + lease_s)
        rows = await self.pg.run(lambda conn: conn.fetch(self.pg.sql.extend, *args))
        state: dict[tuple[str, int], LeaseState] = {}
        for key, row in zip(unique, rows, strict=True):
            if not row["ok"]:
                state[key] = LeaseState.LOST
            else:
                state[key] = LeaseState.CANCEL if row["cancel"] else LeaseState.OK
        return [state[(lease.task_id, lease.token)] for lease in leases]

    async def _complete(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        args = (
            [o.task_id for o in outcomes],
            [o.token for o in outcomes],
            [o.kind.value for o in outcomes],
            [o.result for o in outcomes],
            [_encode_error(o.error) for o in outcomes],
            [o.retry_at for o in outcomes],
            [o.result_expires_at for o in outcomes],
            [_event_detail(o) for o in outcomes],
            now,
            self.pg.channel,
        )
        rows = await self.pg.run(lambda conn: conn.fetch(self.pg.sql.complete, *args))
        self._due_after_claim.clear()
        accepted: list[bool] = []
        for outcome, row in zip(outcomes, rows, strict=True):
            accepted.append(bool(row["ok"]))
            if row["ok"] and TaskStatus(row["status"]).terminal:
                self.pg.heard_end(outcome.task_id)  # local waiters: no need to hear it
        await self.pg.count_events(row["queue"] for row in rows if row["ok"])
        return accepted

    # -- cancel ---------------------------------------------------------------------------------

    async def _cancel(self, task_ids: Sequence[str], now: float) -> list[CancelResult]:
        ids = list(task_ids)
        rows = await self.pg.run(
            lambda conn: conn.fetch(
                self.pg.sql.cancel, ids, now, self.result_ttl_s, self.pg.channel
            )
        )
        self._due_after_claim.clear()
        results: list[CancelResult] = []
        for task_id, row in zip(ids, rows, strict=True):
            if row["status"] == "cancelled":
                results.append(CancelResult.CANCELLED)
                self.pg.heard_end(task_id)
            elif row["status"] == "running" or row["before"] == "running":
                results.append(CancelResult.REQUESTED)  # now, or by an earlier request
            elif row["before"] is not None:
                results.append(CancelResult.ALREADY_TERMINAL)
            else:
                results.append(CancelResult.NOT_FOUND)
        await self.pg.count_events(row["queue"] for row in rows if row["queue"] is not None)
        return results

    # -- waiting for work -----------------------------------------------------------------------

    async def _next_due(self, queues: Sequence[str], now: float) -> float | None:
        pg = self.pg
        await pg.listen()  # anything announced after this read is heard
        known = [self._due_after_claim.get(q) for q in queues]
        if all(
            k is not None and k[0] == pg.gaps and k[1] == pg.work_seq.get(q, 0)
            for q, k in zip(queues, known, strict=True)
        ):
            return min((k[2] for k in known if k is not None and k[2] is not None), default=None)
        names = list(queues)
        due = await self.pg.run(lambda conn: conn.fetchval(self.pg.sql.next_due, names))
        return None if due is None else float(due)

    def _watch_work(self, queues: list[str], worker_id: str, callback: Callable[[], None]) -> None:
        # The listener calls it on each `w:` of these queues, a local enqueue at once, and a
        # listener gap once; `_claim` and `_next_due` start the listener before they read.
        self.pg.add_work_watcher(worker_id, queues, callback)

    async def _unwatch_work(self, queues: list[str], worker_id: str, now: float) -> None:
        self.pg.remove_work_watcher(worker_id)

    # -- dead letters and inspection ------------------------------------------------------------

    async def _dead_letters(self, queue: str, limit: int, offset: int) -> list[TaskRecord]:
        rows = await self.pg.run(
            lambda conn: conn.fetch(self.pg.sql.dead_letters, queue, limit, offset)
        )
        # Dead letters are listed with their error even after the result TTL.
        return [_task_record(row, float("-inf")) for row in rows]

    async def _requeue_dead(
        self, task_ids: Sequence[str], now: float, new_ids: Sequence[str]
    ) -> list[str | None]:
        if len(task_ids) != len(new_ids):
            raise ValueError(
                f"requeue_dead got {len(task_ids)} task id(s) but {len(new_ids)} new id(s); "
                "pass one new id per dead letter (broker.new_task_id(queue))"
            )

        async def op(conn: Conn) -> tuple[list[str | None], list[str]]:
            async with conn.transaction():
                return await self._requeue_locked(conn, task_ids, now, new_ids)

        results, queues = await self.pg.run(op)
        if queues:
            self.pg.bump(sorted(set(queues)), work=True)
            await self.pg.count_events(queues * 2)
        return results

    async def _requeue_locked(
        self, conn: Conn, task_ids: Sequence[str], now: float, new_ids: Sequence[str]
    ) -> tuple[list[str | None], list[str]]:
        """Requeue under row locks; returns the new ids (or None) and the queues touched."""
        rows = await conn.fetch(self.pg.sql.lock_dead, list(task_ids))
        dead = {row["id"]: row for row in rows}
        taken = {row["id"] for row in await conn.fetch(self.pg.sql.existing_ids, list(new_ids))}
        messages: list[TaskMessage] = []
        out: list[str | None] = []
        for old_id, new_id in zip(task_ids, new_ids, strict=True):
            row = dead.pop(old_id, None)  # a dead letter is requeued once
            message = _decode_or_none(row["data"]) if row is not None else None
            if message is None or new_id in taken:
                out.append(None)
                continue
            taken.add(new_id)
            messages.append(
                msgspec.structs.replace(
                    message, id=new_id, requeued_from=old_id, eta=None, created_at=now
                )
            )
            out.append(new_id)
        if not messages:
            return out, []
        # Requeued messages skip dedup (an operator's decision), so each is inserted.
        inserted = await self._insert(conn, messages, now)
        made = [m for m, r in zip(messages, inserted, strict=True) if r.created]
        await conn.execute(
            self.pg.sql.mark_requeued, [m.requeued_from for m in made], [m.id for m in made], now
        )
        created = {m.id for m in made}
        return [i if i in created else None for i in out], [m.queue for m in made]

    async def _stats(self, queues: Sequence[str], now: float) -> list[QueueStats]:
        names = list(queues)
        rows = await self.pg.run(lambda conn: conn.fetch(self.pg.sql.stats, names, now))
        return [
            QueueStats(
                queue=row["queue"],
                queued=row["queued"],
                scheduled=row["scheduled"],
                running=row["running"],
                dead=row["dead"],
                finished_last_minute=row["finished_last_minute"],
            )
            for row in rows
        ]

    async def _purge(self, queue: str, error: ErrorInfo, now: float) -> int:
        sql = self.pg.sql.purge
        row = await self.pg.run(
            lambda conn: conn.fetchrow(
                sql,
                queue,
                now,
                self.result_ttl_s,
                _encode_error(error),
                error.type,
                self.pg.channel,
            )
        )
        ids: list[str] = [] if row is None or row["ids"] is None else list(row["ids"])
        for task_id in ids:
            self.pg.heard_end(task_id)
        if ids:
            await self.pg.count_events([queue] * len(ids))
        return len(ids)


def _decode_or_none(data: bytes) -> TaskMessage | None:
    try:
        return decode_message(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        logger.warning("cannot requeue a dead letter whose message does not decode")
        return None
