"""Redis URLs and the redis-py client the backend runs on.

`parse_url` reads the backend's URL schemes (``redis://``, ``rediss://``, ``redis+cluster://``,
``rediss+cluster://``) and the ``?prefix=`` option; `make_client` builds the client (a blocking
pool on a single node, a cluster client on a cluster) with the backend's retry policy;
`ping_once` checks the server without the retries; `close_client` closes it with its pool;
`node_options` gives the listener's own connections the URL's credentials and TLS;
`mask_secret` keeps the URL's password out of a message.

What does not live here: redis-py's private parts (``_redispy.py``), the connections the
backend takes over (``_lane.py``, ``_listener.py``).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import AuthenticationError, RedisClusterUnreachableError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._backends import mask_password
from .._exceptions import ConfigError

__all__ = [
    "AUTH_ERRORS",
    "CONNECT_ERRORS",
    "close_client",
    "make_client",
    "mask_secret",
    "node_options",
    "parse_url",
    "ping_once",
]

_SCHEMES: Final = {
    "redis": ("redis", False),
    "rediss": ("rediss", False),
    "redis+cluster": ("redis", True),
    "rediss+cluster": ("rediss", True),
}

_MAX_CONNECTIONS: Final = 100

_POOL_WAIT_S: Final = 30.0


#: What opening a client raises when the server refuses the login (a wrong password or user):
#: redis-py's AuthenticationError is a ConnectionError, so check for it first.
AUTH_ERRORS: Final = (AuthenticationError,)

#: What opening a client raises when the server cannot be reached.
CONNECT_ERRORS: Final = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterUnreachableError,
    OSError,
)


def parse_url(url: str, options: dict[str, Any]) -> tuple[str, str, bool]:
    """The client URL, key prefix and cluster flag of a backend URL; takes ``prefix`` and
    ``cluster`` out of `options` (they win over the URL's).

    Raises:
        ConfigError: the URL's scheme is not a Redis one.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ConfigError(
            f"{mask_password(url)!r} is not a Redis URL: use redis://host:port/db, "
            "rediss://host:port/db, or redis+cluster://host:port for a Redis Cluster"
        )
    real_scheme, is_cluster = _SCHEMES[scheme]
    cluster = bool(options.pop("cluster", False)) or is_cluster
    parts = urlsplit(f"{real_scheme}://{rest}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    url_prefix = [value for key, value in query if key == "prefix"]
    prefix = str(options.pop("prefix", url_prefix[-1] if url_prefix else "taskflow"))
    query_rest = urlencode([(key, value) for key, value in query if key != "prefix"])
    return urlunsplit(parts._replace(query=query_rest)), prefix, cluster


def make_client(url: str, cluster: bool, options: dict[str, Any]) -> Any:
    """A client that retries with jittered exponential backoff on connection loss (not on a
    refused login).

    On a single node the pool *waits* for a free connection when all are busy (redis-py's
    default pool raises instead), so a burst of result waiters cannot fail.
    """
    settings: dict[str, Any] = {
        "retry": Retry(
            ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries=8, is_retryable=_retryable
        ),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "socket_keepalive": True,
        "socket_connect_timeout": 5.0,
        "max_connections": _MAX_CONNECTIONS,
    }
    settings.update(options)
    if cluster:
        return RedisCluster.from_url(url, **settings)
    settings.setdefault("timeout", _POOL_WAIT_S)
    pool = aioredis.BlockingConnectionPool.from_url(url, **settings)
    return aioredis.Redis(connection_pool=pool)


def _retryable(error: Exception) -> bool:
    """Whether a failed call is worth repeating on a new connection: not if the server refused
    the login (redis-py's AuthenticationError is a ConnectionError), which a retry repeats."""
    return not isinstance(error, AUTH_ERRORS)


async def ping_once(client: Any) -> None:
    """PING without the client's reconnect retries, so that a server that refuses or is
    missing is reported at once (with the retries, after about 6 s); the retries apply again
    afterwards."""
    retry = None if isinstance(client, RedisCluster) else client.get_retry()
    if retry is None:  # a cluster's first command connects to its nodes once, no retries
        await client.ping()
        return
    client.set_retry(Retry(NoBackoff(), 0))
    try:
        await client.ping()
    finally:
        client.set_retry(retry)


async def close_client(client: Any) -> None:
    """Close a client made by `make_client`, with its connection pool on a single node (a
    ``Redis`` given a pool leaves it open, its sockets to the garbage collector)."""
    if isinstance(client, aioredis.Redis):
        await client.aclose(close_connection_pool=True)
    else:
        await client.aclose()


def node_options(url: str) -> dict[str, Any]:
    """Credentials and TLS of `url`, for the listener's own per-node connections on a cluster."""
    parts = urlsplit(url)
    options: dict[str, Any] = {"ssl": parts.scheme == "rediss"}
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    return options


def mask_secret(text: str, url: str) -> str:
    """`text` with the password of `url` (if it has one) shown as ``***`` wherever it occurs
    (one under 4 characters is left alone: blotting out every "ab" would garble the text)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    for secret in {password or "", unquote(password or "")}:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
