"""How an app's backend connections meet event loops: opening at first use, reopening, closing
with the loop that owns them, and the bridge from synchronous code.

An app is open on at most one event loop at a time, its *owner*: the backend's connections,
futures and background tasks belong to that loop. The rules (for users: docs/concepts.md,
"The app's lifecycle"):

* A call that needs the backend, made on a loop that does not own the app, opens it there
  (`ensure_open`); concurrent first calls open it once. `open()` does the same explicitly (a
  service fails fast at start-up) and nests: the backend closes at the outermost `close()`. A
  closed app opens again.
* When the owner loop ends, the app closes with it: an async generator started on the loop at
  each open is finalised by the loop's shutdown (``shutdown_asyncgens``, which `asyncio.run`,
  `anyio.run`, `asyncio.Runner`, pytest-asyncio and Starlette's TestClient all call). A loop
  that ended without that (closed by hand, or only stopped) is noticed by the next caller on
  another loop, which abandons the old connections (they cannot be closed on a loop that no
  longer runs) and opens anew.
* An owner still running in another thread keeps the app: a caller on a third loop gets a
  `LifecycleError`, while synchronous code in any thread runs its calls on the owner.
* Synchronous code with no loop owning the app runs on a *private loop* in a background thread,
  which lives exactly as long as the app is open on it: a failed open stops it at once, and
  `close_sync()`, interpreter exit, or an async caller taking the app to its own loop stop it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from ._config import GlobalConfig
from ._exceptions import LifecycleError
from .abc import ArtifactStore, Broker

__all__ = ["AppLifecycle", "BackendLink", "loop_options"]

logger = logging.getLogger("taskflow.app")

R = TypeVar("R")

_PrivateLoop = tuple[
    anyio.from_thread.BlockingPortal,
    contextlib.AbstractContextManager[anyio.from_thread.BlockingPortal],
    asyncio.AbstractEventLoop,
]
"""A private loop taken out of use: its portal, the portal's context manager, the loop."""

#: Longest wait for the backend to close when the private loop stops (at exit, or when an async
#: caller takes the app over): a server that stopped answering must not keep a program alive.
_CLOSE_TIMEOUT_S = 10.0


class BackendLink:
    """Connects an app's backend and its artifact store, and lets go of them: what
    `AppLifecycle` opens and closes.

    The store opens after the broker and closes before it (a backend's own store shares its
    connections). A broker or store its creator opened before the app did (tests, shared
    connections) stays theirs to close: the link closes only what it opened.
    """

    def __init__(
        self, broker: Broker, config: GlobalConfig, store: ArtifactStore | None = None
    ) -> None:
        self._broker = broker
        self._config = config
        self._store = store
        self._owns_broker = True
        self._owns_store = True

    async def connect(self) -> None:
        """Hand the app's settings to the backend and open it, then the store (each unless
        already open)."""
        broker = self._broker
        broker.result_ttl_s = self._config.result_ttl_s
        broker.storage.events_maxlen = self._config.events_maxlen
        broker.storage.errors_maxlen = self._config.errors_maxlen
        self._owns_broker = not broker.is_open
        if self._owns_broker:
            await broker.open()
        store = self._store
        self._owns_store = store is not None and not store.is_open
        if store is not None and self._owns_store:
            try:
                await store.open()
            except BaseException:
                if self._owns_broker:
                    await broker.close()
                raise

    async def disconnect(self) -> None:
        """Close the store and the backend if `connect` opened them."""
        try:
            if self._store is not None and self._owns_store:
                await self._store.close()
        finally:
            if self._owns_broker:
                await self._broker.close()

    def abandon(self) -> None:
        """Let go of the backend of an event loop that has ended (nothing can be awaited)."""
        if self._store is not None and self._owns_store:
            self._store.abandon()
        if self._owns_broker:
            self._broker.abandon()


class AppLifecycle:
    """Which event loop owns an app's backend, and every way of changing that.

    Package-internal: the app, its handles, its workers and the Supervisor reach it as
    ``app.lifecycle`` (`ensure_open` before a call that needs the backend, `call_sync` from
    synchronous code).

    Args:
        name: The app's name, for messages.
        link: What opens and closes the app's backend.

    Attributes:
        loop: The loop the app is open on (its owner), or None while closed.
        token: anyio's token of `loop`, for calls from other threads.
    """

    def __init__(self, name: str, link: BackendLink) -> None:
        self._name = name
        self._link = link
        self.loop: asyncio.AbstractEventLoop | None = None
        self.token: anyio.lowlevel.EventLoopToken | None = None
        #: Explicit `open()`s not closed yet (a lazy open counts none).
        self._opens = 0
        #: Identifies the current open, so a stale keeper of an earlier one does nothing.
        self._session: object | None = None
        #: The async generator the owner loop finalises when it shuts down (`_close_with_loop`).
        self._keeper: AsyncGenerator[None, None] | None = None
        #: An open in progress, awaited by every concurrent first caller on its loop.
        self._opening: asyncio.Task[None] | None = None
        #: Guards `_opening` and the private loop (started, stopped and counted from several
        #: threads).
        self._lock = threading.Lock()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._portal_cm: contextlib.AbstractContextManager[anyio.from_thread.BlockingPortal] | None
        self._portal_cm = None
        self._portal_loop: asyncio.AbstractEventLoop | None = None
        #: Synchronous calls running on the private loop right now.
        self._portal_calls = 0

    @property
    def is_open(self) -> bool:
        """True while the app is open on a loop that has not been closed."""
        loop = self.loop
        return loop is not None and not loop.is_closed()

    # -- async callers -----------------------------------------------------------------------

    async def ensure_open(self) -> None:
        """Open the app on the running loop unless it is open there already.

        Raises:
            LifecycleError: a loop still running in another thread owns the app.
        """
        here = asyncio.get_running_loop()
        while self.loop is not here:
            with self._lock:  # two loops in two threads may both find the app closed
                opening = self._opening
                if opening is None:
                    # A task of its own: a caller cancelled while it waits does not undo the
                    # open the others wait for.
                    opening = here.create_task(self._open_on(here), name="taskflow-open")
                    opening.add_done_callback(self._opened)
                    self._opening = opening
            if opening.get_loop() is not here:
                raise LifecycleError(self._owned_elsewhere("is being opened"))
            await asyncio.shield(opening)

    async def open(self) -> None:
        """`ensure_open`, counted: the backend closes when every `open()` has been closed."""
        await self.ensure_open()
        self._opens += 1

    async def close(self) -> None:
        """Undo one `open()`; the last one (or any close of a lazily opened app) disconnects.
        Closing an app that is not open does nothing.

        Raises:
            LifecycleError: a loop still running in another thread owns the app.
        """
        if self.loop is None:
            return
        if self._opens > 1:
            self._opens -= 1
            return
        here = asyncio.get_running_loop()
        if self.loop is here:
            await self._disconnect()
        else:
            await self._leave_owner(here)

    def _opened(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            if self._opening is task:
                self._opening = None
        if not task.cancelled():
            task.exception()  # the callers that awaited it have it; nobody else must log it

    async def _open_on(self, here: asyncio.AbstractEventLoop) -> None:
        await self._leave_owner(here)
        await self._link.connect()
        session = object()
        self.loop, self.token, self._session = here, anyio.lowlevel.current_token(), session
        self._opens = 0
        keeper = self._close_with_loop(session)
        await keeper.asend(None)  # started here, so this loop finalises it when it shuts down
        self._keeper = keeper

    async def _leave_owner(self, here: asyncio.AbstractEventLoop) -> None:
        """Make sure no loop but `here` owns the app: take it from the private loop, or let
        go of a loop that has ended; refuse one still running in another thread."""
        owner = self.loop
        if owner is None or owner is here:
            return
        if owner is self._portal_loop:
            await anyio.to_thread.run_sync(self._take_from_private_loop)
        elif owner.is_running():  # in another thread: this one runs `here`
            raise LifecycleError(self._owned_elsewhere("is open"))
        else:
            logger.debug("app %r: its event loop has ended; reconnecting", self._name)
            self._release()
            self._link.abandon()

    async def _disconnect(self) -> None:
        """Close the backend, on the owner loop, whatever the count of opens."""
        keeper = self._keeper
        self._release()
        try:
            await self._link.disconnect()
        finally:
            if keeper is not None:
                await keeper.aclose()  # its session is over: it does nothing

    def _release(self) -> None:
        self.loop = self.token = self._session = self._keeper = None
        self._opens = 0

    async def _close_with_loop(self, session: object) -> AsyncGenerator[None, None]:
        """Started on the owner loop at each open and finalised by that loop's shutdown, when
        it closes the app if this open is still the current one."""
        try:
            yield
        finally:
            if self._session is session:
                self._keeper = None  # this generator: `_disconnect` must not close it again
                try:
                    await self._disconnect()
                except Exception:
                    logger.warning(
                        "closing app %r with its event loop failed", self._name, exc_info=True
                    )

    def _owned_elsewhere(self, what: str) -> str:
        return (
            f"app {self._name!r} {what} on an event loop running in another thread, which "
            "owns its backend connections; it cannot be used from this event loop at the same "
            "time. Use the blocking calls (add_task_sync, SyncTask, SyncResult) from other "
            "threads, which run on the app's loop, or give this loop a QueueTasks of its own"
        )

    # -- synchronous callers -----------------------------------------------------------------

    def call_sync(self, fn: Callable[..., Awaitable[R]], *args: Any) -> R:
        """Run ``await fn(*args)`` with the app open, from code that runs no event loop: on the
        owner loop if one runs in another thread, else on the private loop.

        Raises:
            LifecycleError: this thread runs an event loop (blocking would freeze it).
        """
        _refuse_on_event_loop()
        owner, token = self.loop, self.token
        if (
            owner is not None
            and token is not None
            and owner is not self._portal_loop
            and owner.is_running()
        ):
            return anyio.from_thread.run(self._call_open, fn, *args, token=token)
        return self._call_on_private_loop(fn, *args)

    def close_sync(self) -> None:
        """`close` from synchronous code, on whichever loop owns the app."""
        _refuse_on_event_loop()
        owner, token = self.loop, self.token
        if owner is None:
            return
        if owner is self._portal_loop:
            with self._lock:
                private = self._detach_private_loop()
            self._stop_private_loop(private)
        elif owner.is_running() and token is not None:
            anyio.from_thread.run(self.close, token=token)
        else:
            self._release()
            self._link.abandon()

    async def _call_open(self, fn: Callable[..., Awaitable[R]], *args: Any) -> R:
        await self.ensure_open()
        return await fn(*args)

    def _call_on_private_loop(self, fn: Callable[..., Awaitable[R]], *args: Any) -> R:
        with self._lock:
            portal = self._portal if self._portal is not None else self._start_private_loop()
            self._portal_calls += 1
        private: _PrivateLoop | None = None
        try:
            result: R = portal.call(self._call_open, fn, *args)
            return result
        finally:
            with self._lock:
                self._portal_calls -= 1
                if (
                    not self._portal_calls
                    and self._portal is portal
                    and self.loop is not self._portal_loop
                ):
                    # The app is not open there (its open failed, or it was closed): nothing
                    # may be left running, or the interpreter would wait for it at exit.
                    private = self._detach_private_loop()
            self._stop_private_loop(private)

    def _start_private_loop(self) -> anyio.from_thread.BlockingPortal:
        cm = anyio.from_thread.start_blocking_portal(
            backend_options=loop_options(), name=f"taskflow-{self._name}"
        )
        portal = cm.__enter__()
        self._portal, self._portal_cm = portal, cm
        self._portal_loop = portal.call(asyncio.get_running_loop)
        # A daemon thread left running at exit would hang the interpreter's finalisation.
        atexit.register(self._stop_at_exit)
        return portal

    def _detach_private_loop(self) -> _PrivateLoop | None:
        """Take the private loop out of use (lock held); `_stop_private_loop` then stops it,
        with the lock released: the loop's own work (an open finishing) may need the lock."""
        portal, cm, loop = self._portal, self._portal_cm, self._portal_loop
        self._portal = self._portal_cm = self._portal_loop = None
        atexit.unregister(self._stop_at_exit)
        return None if portal is None or cm is None or loop is None else (portal, cm, loop)

    def _stop_private_loop(self, private: _PrivateLoop | None) -> None:
        """Close the app if the detached private loop owns it, then stop that loop."""
        if private is None:
            return
        portal, cm, loop = private
        try:
            if self.loop is loop:
                portal.call(self._disconnect_bounded)
        except Exception:
            logger.warning("closing app %r failed", self._name, exc_info=True)
        finally:
            cm.__exit__(None, None, None)

    async def _disconnect_bounded(self) -> None:
        with anyio.move_on_after(_CLOSE_TIMEOUT_S):
            await self._disconnect()

    def _take_from_private_loop(self) -> None:
        """Close the app on the private loop and stop it, for an async caller that opens the
        app on its own loop (runs in a worker thread of that loop)."""
        with self._lock:
            if self._portal_calls:
                raise LifecycleError(
                    f"app {self._name!r} is open on the private event loop of its blocking "
                    "calls (add_task_sync, SyncTask, SyncResult), and one of them is running in "
                    "another thread right now, so it cannot move to this event loop. Open the "
                    "app on your event loop before any blocking call (`async with app:` in the "
                    "web app's lifespan, for example): blocking calls then run on that loop"
                )
            private = self._detach_private_loop()
        self._stop_private_loop(private)

    def _stop_at_exit(self) -> None:
        with self._lock:
            private = self._detach_private_loop()
        self._stop_private_loop(private)


def _refuse_on_event_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    # Blocking here would freeze the loop (and deadlock if it is the app's own).
    raise LifecycleError(
        "a blocking call (add_task_sync, SyncTask, SyncResult, close_sync) was made on a thread "
        "that runs an event loop; inside async code use add_task / AsyncTask / AsyncResult with "
        "await"
    )


def loop_options() -> dict[str, Any]:
    """anyio backend options for the event loops taskflow starts: uvloop when installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
