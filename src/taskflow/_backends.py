"""Backend lookup by URL scheme, with lazy imports and a clear word about missing drivers.

Only this module maps ``memory://``, ``redis://``, ``rediss://``, ``redis+cluster://``, ``rediss+cluster://``,
``postgresql://`` and ``postgres://`` to backend modules; each backend module exposes
``from_url(url, app=name) -> Broker`` (the broker carries its storage). The app's name
namespaces what the backend keeps on its server (`check_app_name` says which names can).
A backend whose driver is missing says so in one way, `missing_driver`, whether the lookup here
or the backend module itself finds it out.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from typing import Final, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from ._exceptions import BackendUnavailable, ConfigError
from .abc import Broker, Storage

__all__ = [
    "DEFAULT_APP",
    "broker_from_url",
    "check_app_name",
    "mask_password",
    "missing_driver",
    "resolve_backend",
]

#: The name of an app that was not given one, and the namespace of a backend built without one.
DEFAULT_APP: Final = "taskflow"
_APP_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")

_SCHEMES: Final = {
    "memory": "taskflow.memory",
    "redis": "taskflow.redis",
    "rediss": "taskflow.redis",
    "redis+cluster": "taskflow.redis",
    "rediss+cluster": "taskflow.redis",
    "postgresql": "taskflow.postgres",
    "postgres": "taskflow.postgres",
}


class _Driver(NamedTuple):
    """What a server backend needs installed."""

    backend: str
    """The backend's name in messages."""
    package: str
    """The driver package it imports."""
    extra: str
    """What to ``pip install`` for it."""


#: Backend module -> its driver.
_DRIVERS: Final = {
    "taskflow.redis": _Driver("Redis", "redis", "taskflow[redis]"),
    "taskflow.postgres": _Driver("PostgreSQL", "asyncpg", "taskflow[postgres]"),
}


def missing_driver(module_name: str) -> BackendUnavailable:
    """The error for a backend whose driver is not installed, naming the package and the
    ``pip install`` that brings it (`module_name`: ``"taskflow.redis"``, ``"taskflow.postgres"``).

    Raised by the URL lookup here, and by a backend module used without its driver.
    """
    backend, package, extra = _DRIVERS[module_name]
    return BackendUnavailable(
        f"the {backend} backend needs the {package!r} package, which is not installed: "
        f'pip install "{extra}"'
    )


def check_app_name(name: object) -> None:
    """Raise `ConfigError` unless `name` can name an app: 1 to 40 letters, digits, ``_`` or
    ``-``, starting with a letter or digit.

    The name namespaces the app's keys, tables and channels on a server (a Redis key prefix, a
    PostgreSQL schema), so it is held to what every backend can use as it is.
    """
    if not isinstance(name, str) or not _APP_NAME.fullmatch(name):
        raise ConfigError(
            f"app name {name!r} cannot be used: the name namespaces the app's tasks on the "
            "server (Redis keys, a PostgreSQL schema), so it must be 1 to 40 letters, digits, "
            "'_' or '-', starting with a letter or digit; for example QueueTasks('billing') "
            "or QueueTasks('shop-api')"
        )


def broker_from_url(url: str, *, app: str = DEFAULT_APP) -> Broker:
    """Build the broker (and its storage) for a backend URL, in the namespace of app `app`.

    Raises:
        ConfigError: the URL has no scheme taskflow knows, or `app` cannot name an app.
        BackendUnavailable: the backend's driver is not installed (the message says what to
            install).
    """
    scheme, sep, _ = url.partition("://")
    module_name = _SCHEMES.get(scheme.lower()) if sep else None
    if module_name is None:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigError(f"unknown backend URL {mask_password(url)!r}: expected one of {known}")
    driver = _DRIVERS.get(module_name)
    if driver is not None and importlib.util.find_spec(driver.package) is None:
        raise missing_driver(module_name)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(f"backend {module_name} is not available: {exc}") from exc
    try:
        broker = module.from_url(url, app=app)
    except ValueError as exc:  # what urllib says of a URL it cannot take apart
        raise ConfigError(f"backend URL {mask_password(url)!r} is malformed: {exc}") from None
    if not isinstance(broker, Broker):  # pragma: no cover - a broken backend module
        raise BackendUnavailable(f"{module_name}.from_url returned {broker!r}, not a Broker")
    return broker


def resolve_backend(
    broker: Broker | str | None, storage: Storage | str | None, *, app: str = DEFAULT_APP
) -> Broker:
    """The one broker app `app` uses (its storage is ``broker.storage``).

    Broker and storage live on one server (storing an outcome and acking it is one atomic
    call), so when both are given they must name the same backend. A URL is built in the app's
    namespace; a `Broker` object keeps its own.

    Raises:
        ConfigError: `broker` or `storage` is neither a URL nor a backend object (a port
            number, say), or the two name different backends.
    """
    _check_kind("broker", broker, Broker)
    _check_kind("storage", storage, Storage)
    if broker is None and storage is None:
        return broker_from_url("memory://", app=app)
    if isinstance(broker, str):
        if isinstance(storage, str) and storage != broker:
            raise ConfigError(
                f"broker={broker!r} and storage={storage!r} name different servers; a broker "
                "and its storage live on one server. Pass only broker=... (its storage follows)"
            )
        if isinstance(storage, Storage):
            raise ConfigError("pass broker and storage both as URLs or both as objects")
        return broker_from_url(broker, app=app)
    if broker is None:
        if isinstance(storage, str):
            return broker_from_url(storage, app=app)
        raise ConfigError(
            "a Storage object alone cannot move messages: pass broker=... (for example "
            "MemoryBroker(storage)); the storage follows the broker"
        )
    if storage is not None and storage is not broker.storage:
        raise ConfigError(
            "broker and storage must be one backend: pass broker=... alone, or a storage that "
            "is broker.storage"
        )
    return broker


def _check_kind(what: str, value: object, kind: type) -> None:
    if value is None or isinstance(value, str | kind):
        return
    example = "'redis://localhost:6379/0'"
    if isinstance(value, int) and not isinstance(value, bool):
        example = f"'redis://localhost:{value}/0' (a port alone does not say which server)"
    raise ConfigError(
        f"{what}={value!r} ({type(value).__name__}) is neither a backend URL nor a "
        f"{kind.__name__}: pass a URL such as {what}={example}, or a {kind.__name__} object"
    )


_PASSWORD_PARAM: Final = re.compile(r"(?i)(password=)[^&]*")


#: ``scheme://user:password@``, for a URL `urlsplit` cannot take apart.
_USERINFO_PASSWORD: Final = re.compile(r"^([^/]*//[^:/?#@]*:)[^/?#]*@")


def mask_password(url: str) -> str:
    """`url` with its password (``user:password@`` or ``?password=``) shown as ``***``, for
    logs and error messages. Never raises: a URL that does not parse is masked as text."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced IPv6 bracket, say: mask by pattern
        return _mask_as_text(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostinfo}"
    query = _PASSWORD_PARAM.sub(r"\1***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return _mask_as_text(url)  # nothing urllib saw (no scheme, say): mask by pattern
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _mask_as_text(url: str) -> str:
    return _PASSWORD_PARAM.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", url))
