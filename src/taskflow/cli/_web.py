"""``taskflow web``: serve an app's web view (`taskflow.web.create_app`) with uvicorn.

The command checks what it can before serving and reports each failure as one line with its
own exit status: the ``web`` extra missing (`ExitCode.MISSING_EXTRA`), a bad ``MODULE:APP``
(`ExitCode.USAGE`), the port taken (`ExitCode.PORT_IN_USE`: the socket is bound here, before
uvicorn starts, so nothing else can take it in between). A memory backend is only visible from
its own process: it needs ``--with-worker``, which runs a worker on the server's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib.util
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from .._app import QueueTasks
from ._common import load_app
from ._errors import CliError, ExitCode

if TYPE_CHECKING:  # the web extra is optional: imported when the command runs
    from starlette.applications import Starlette

__all__ = ["TOKEN_ENV", "web"]

#: The environment variable read for the token when --token is not given (keeps it out of
#: the process list).
TOKEN_ENV = "TASKFLOW_WEB_TOKEN"


def _check_extra() -> None:
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise CliError(
            ExitCode.MISSING_EXTRA,
            f"taskflow web needs {' and '.join(missing)}: pip install 'taskflow[web]'",
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port`.

    Raises:
        CliError: `ExitCode.PORT_IN_USE` if the address is taken, `ExitCode.USAGE` if it
            cannot be bound at all (an unknown host).
    """
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
    except OSError as exc:
        raise CliError(ExitCode.USAGE, f"cannot listen on {host}:{port}: {exc}") from exc
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(info[4])
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CliError(
                ExitCode.PORT_IN_USE,
                f"port {port} on {host} is taken by another process: pick another with --port",
            ) from exc
        raise CliError(ExitCode.USAGE, f"cannot listen on {host}:{port}: {exc}") from exc
    return sock


def asgi_app(app: QueueTasks, token: str | None, worker: int | None) -> Starlette:
    """The served ASGI app: the web view, with the taskflow app opened for the server's life
    (and, with `worker`, a worker of that concurrency running beside it)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from ..web import create_app

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        async with app:
            if worker is None:
                yield
                return
            async with app.running(worker):
                yield

    return Starlette(routes=[Mount("/", app=create_app(app, token=token))], lifespan=lifespan)


def web(args: argparse.Namespace) -> int:
    """``taskflow web``: serve the app's web view until stopped (Ctrl-C, SIGTERM)."""
    _check_extra()
    app = load_app(args.app)
    if not app.storage.shared_across_processes and not args.with_worker:
        raise CliError(
            ExitCode.NOT_SHARED,
            f"app {app.name!r} keeps its tasks in memory ({app.storage.describe()}), which "
            "this process cannot see: add --with-worker to run its workers inside the web "
            "server, or give the app a Redis or PostgreSQL URL",
        )
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    sock = bind(args.host, args.port)
    import uvicorn

    worker = (args.concurrency or app.config.concurrency) if args.with_worker else None
    config = uvicorn.Config(
        asgi_app(app, token, worker), log_level="warning", lifespan="on", ws="websockets-sansio"
    )
    host, port = sock.getsockname()[:2]
    mode = "read-only" if token is None else "sign in with the token to change things"
    print(f"taskflow web: app {app.name!r} at http://{host}:{port}/ ({mode})", file=sys.stderr)
    with sock, _stop_signals_end_quietly():
        asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    return ExitCode.OK


@contextlib.contextmanager
def _stop_signals_end_quietly() -> Iterator[None]:
    """While serving, SIGINT and SIGTERM only stop uvicorn gracefully: uvicorn raises the
    signal again once it has stopped, which must then end the command with status 0 (as a
    worker's stop does), not kill it."""
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _stopped) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(signum: int, frame: object) -> None:
    """The handler uvicorn's re-raised stop signal reaches: the server has stopped already."""
