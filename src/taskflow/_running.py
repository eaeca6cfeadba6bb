"""The three ways to run an app's worker, each through one `Starter`, and the stop signals.

* `running`: a worker inside the caller's event loop for the duration of a block;
* `run_forever` (through `serve_until_signal`): a worker in this thread until SIGINT/SIGTERM,
  as ``QueueTasks.run_forever()`` and ``taskflow worker`` run it;
* `run_in_thread`: a worker on an event loop in a background thread, for synchronous programs.

`QueueTasks.running`, `run_forever` and `run_in_thread` are these; the CLI calls
`serve_until_signal`. What does not live here: the start/stop sequence itself (`_starter.py`)
and the worker (`_worker.py`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Final

import anyio
import anyio.abc
import anyio.from_thread

from ._lifecycle import loop_options
from ._starter import Starter, StarterApp

__all__ = [
    "hold_stop_signals",
    "run_forever",
    "run_in_thread",
    "running",
    "serve_until_signal",
    "watch_signals",
]

logger = logging.getLogger("taskflow.app")

#: Copies of one stop request arrive together: a terminal's Ctrl-C reaches every process of
#: its process group, ``taskflow worker -p N`` forwards it to its children as well, and
#: ``timeout`` and systemd (``KillMode=control-group``) signal every process too. A signal
#: within this long of the first is the same request; a person's deliberate second Ctrl-C
#: comes later.
REPEAT_WINDOW_S: Final = 1.0
STOP_SIGNALS: Final = frozenset({signal.SIGINT, signal.SIGTERM})


@contextlib.asynccontextmanager
async def running(
    app: StarterApp, concurrency: int | None, queues: Sequence[str] | None
) -> AsyncIterator[Starter]:
    """`QueueTasks.running`: a worker in the caller's loop for the block."""
    starter = Starter(app, concurrency=concurrency, queues=queues)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(starter.serve)
            try:
                yield starter
            finally:
                starter.stop()
    except BaseExceptionGroup as group:
        # The caller's own exception should reach the caller as itself, not wrapped.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def run_forever(app: StarterApp, concurrency: int | None, queues: Sequence[str] | None) -> None:
    """`QueueTasks.run_forever`: a worker in this thread (its own event loop) until a signal."""
    starter = Starter(app, concurrency=concurrency, queues=queues)
    with hold_stop_signals():
        anyio.run(serve_until_signal, starter, backend_options=loop_options())


@contextlib.contextmanager
def hold_stop_signals() -> Iterator[None]:
    """Keep SIGINT/SIGTERM pending in this thread until `watch_signals` listens for them.

    Wrap ``anyio.run`` of a process's main coroutine in it. Without it a stop signal that
    arrives while the loop starts, before the watcher listens, meets asyncio's own Ctrl-C
    handler (which cancels the main task, a cancellation the start-up may swallow: the worker
    then runs on as if never asked to stop) or SIGTERM's default (the process dies holding
    nothing yet, but says nothing). Held, it is delivered to the watcher the moment it listens.
    The thread's previous mask comes back at the end. No-op where POSIX signal masks do not
    exist.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


async def serve_until_signal(starter: Starter) -> None:
    """Serve `starter` until SIGINT/SIGTERM (graceful), or a second signal (at once).

    Raises:
        Exception: what stopped the worker from starting or running, as itself, not in an
            exception group.
    """
    try:
        async with anyio.create_task_group() as tg:
            # The signal watcher outlives a stop-now: its receiver keeps the default handlers
            # away (a late copy of a signal would kill the process) until the worker has
            # released what it held and the app is closed.
            serving = anyio.CancelScope()
            await tg.start(watch_signals, lambda _: starter.stop(), lambda _: serving.cancel())
            with serving:
                await starter.serve()
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # As in running(): the error itself, not wrapped in (nested) one-error groups.
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        if error is group:
            raise
        raise error from None


@contextlib.contextmanager
def run_in_thread(
    app: StarterApp, concurrency: int | None, queues: Sequence[str] | None
) -> Iterator[Starter]:
    """`QueueTasks.run_in_thread`: a worker on a loop in a background thread for the block."""
    starter = Starter(app, concurrency=concurrency, queues=queues)
    with anyio.from_thread.start_blocking_portal(backend_options=loop_options()) as portal:
        future, _ = portal.start_task(starter.serve)
        try:
            yield starter
        finally:
            portal.call(starter.stop)
            future.result()


async def watch_signals(
    on_stop: Callable[[int], None],
    on_second: Callable[[int], None],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Call `on_stop` at the first SIGINT/SIGTERM and `on_second` at a second stop request (a
    signal `REPEAT_WINDOW_S` or more after the first). Copies of the first signal that arrive
    within the window are logged and ignored, and so is every signal after the second: the
    watcher runs until cancelled, so that no signal meets the default handler (which would end
    the process) while the stop it asked for is under way. Start it with ``tg.start``: it is
    listening when that returns, and signals held by `hold_stop_signals` reach it then."""
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        task_status.started()
        first: float | None = None
        stopping_now = False
        async for signum in signals:
            name = signal.Signals(signum).name
            now = time.monotonic()
            if stopping_now:
                logger.debug("received %s while stopping now: nothing more to do", name)
            elif first is None:
                first = now
                logger.info(
                    "received %s: stopping gracefully (signal again a second or more later to "
                    "stop at once)",
                    name,
                )
                on_stop(signum)
            elif now - first < REPEAT_WINDOW_S:
                logger.debug(
                    "received %s again within %.1f s: the same stop request", name, REPEAT_WINDOW_S
                )
            else:
                logger.warning("second signal (%s): stopping now", name)
                stopping_now = True
                on_second(signum)
