"""`Step`: ``ctx.step(name)``, a named part of a task's run that a re-run skips once it was
recorded done.

A step is recorded done when its block exits normally (or its function returns) **and** its
record is written: a checkpoint under ``step:<name>`` (`RunCheckpoints`: awaited, fenced by the
run's token, so a run that lost its lease cannot record anything). The record holds the step's
value (msgpack, as results are). A run of the same task that finds the record (a re-run after a
crash, a retry, a release) sees the step done with its recorded value; a step interrupted half
way (its block raised, the process died before or while the record was written) is not done, so
the re-run runs it again: the seed's "second confirmation".

Two forms, because an ``async with`` block cannot be skipped by its context manager:

* ``value = await ctx.step("download", fn, *args, **kwargs)`` calls ``fn`` (sync or async)
  only if the step is not done, and returns the recorded value either way (the recommended
  form: the body cannot run twice by mistake);
* ``async with ctx.step("download") as step:`` (``with`` in a sync task) for a block: the block
  runs every time, and guards its work with ``if not step.done:``, setting ``step.value``.

Either way the value a run gets back is the recorded one, decoded (a tuple comes back a list):
the first run sees what a re-run will see.

What does not live here: where checkpoints are kept (``_checkpoints.py``), chunk loops
(``_chunks.py``; a chunk is recorded the same way, under its loop's name).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

import anyio.from_thread

from ._checkpoints import RunCheckpoints
from ._exceptions import UnencodableResult
from ._message import decode_value, encode_value
from ._run import Run

__all__ = ["STEP_KEY_PREFIX", "Step", "call_step", "check_step_function"]

logger = logging.getLogger("taskflow.worker")

STEP_KEY_PREFIX: Final = "step:"
"""The checkpoint name of step ``x`` is ``step:x``."""

_UNSET: Final[Any] = object()


class Step:
    """One step of a task's run (``ctx.step(name)``): ``async with ctx.step("download") as
    step:`` in an async task, ``with`` in a sync one.

    Entering reads the step's record: `done` says whether an earlier run of this task recorded
    it, and `value` is then its recorded value. The block runs every time (Python cannot skip
    it), so it guards its work::

        async with ctx.step("download") as step:
            if not step.done:
                step.value = await download(day)
        rows = step.value

    Leaving the block normally records the step (with `value`, None if never set) and only
    then counts it done; leaving it with an exception records nothing. The error of a run that
    fails inside the block names the step (``... [in step 'download']``).

    Made by `TaskContext.step`, never directly.

    Attributes:
        name: The step's name, unique in the task.
        done: The step is recorded done: by an earlier run (known once the block is entered),
            or by this one once the block has exited.
    """

    __slots__ = (
        "_checkpoints",
        "_entered",
        "_loop_thread",
        "_outer",
        "_run",
        "_value",
        "done",
        "name",
    )

    def __init__(
        self, name: str, *, checkpoints: RunCheckpoints, run: Run, loop_thread: int
    ) -> None:
        _check_name(name)
        checkpoints.claim_name(
            STEP_KEY_PREFIX + name,
            f"ctx.step name {name!r} is used twice in one run of task {run.task_id}: give each "
            f"step a name of its own (in a loop, one per item: ctx.step(f'load:{{day}}', ...)), "
            "so each is recorded on its own",
        )
        self.name = name
        self.done = False
        self._value: Any = None
        self._checkpoints = checkpoints
        self._run = run
        self._loop_thread = loop_thread
        self._entered = False
        self._outer: str | None = None

    def __repr__(self) -> str:
        return f"Step(name={self.name!r}, done={self.done})"

    @property
    def value(self) -> Any:
        """The step's value: the recorded one if it is done, else what the block set."""
        return self._value

    @value.setter
    def value(self, value: Any) -> None:
        if self.done:
            # The block ran its work again although the step was done (no `if not step.done:`
            # guard): the recorded value stays, as it would for any re-run.
            logger.warning(
                "task %s: step %r was recorded done by an earlier run, yet its block set a new "
                "value; the recorded one is kept. Guard the block's work with `if not "
                "step.done:` (or use `await ctx.step(name, fn, ...)`) so it runs once",
                self._run.task_id,
                self.name,
            )
            return
        self._value = value

    # -- async tasks ----------------------------------------------------------------------------

    async def __aenter__(self) -> Step:
        await self._enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._exit(exc_type is None)

    # -- sync tasks (in their worker thread) ----------------------------------------------------

    def __enter__(self) -> Step:
        if threading.get_ident() == self._loop_thread:
            raise TypeError(
                f"ctx.step({self.name!r}) in an async task is entered with `async with`, not "
                "`with`: its record is written with an awaited call"
            )
        anyio.from_thread.run(self._enter)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        anyio.from_thread.run(self._exit, exc_type is None)

    # -- the steps ------------------------------------------------------------------------------

    async def _enter(self) -> None:
        if self._entered:
            raise RuntimeError(
                f"ctx.step({self.name!r}) was entered twice: each step is one block; give "
                "another block a step of its own, ctx.step('other-name')"
            )
        self._entered = True
        stored = await self._checkpoints.read(STEP_KEY_PREFIX + self.name)
        if stored is not None:
            self._value = decode_value(stored)
            self.done = True
            return
        self._outer = self._run.chunk_at
        self._run.chunk_at = f"step {self.name!r}"

    async def _exit(self, normally: bool) -> None:
        if self.done:
            return
        if not normally:
            return  # `chunk_at` still names the step, for the error the run may end with
        self._run.chunk_at = self._outer
        try:
            encoded = encode_value(self._value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnencodableResult(
                f"step {self.name!r} of task {self._run.task_id} set a value of type "
                f"{type(self._value).__name__} that msgspec cannot encode ({exc}): a step's "
                "value is recorded like a result; keep it to plain data (ids, paths, counts) "
                "and put large data in ctx.artifacts"
            ) from None
        await self._checkpoints.save(STEP_KEY_PREFIX + self.name, encoded)
        self._value = decode_value(encoded)  # what a re-run would read back
        self.done = True


async def call_step(
    step: Step, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The callable form of a step: call `fn` unless `step` is done, record its value, return
    the recorded value (``await ctx.step(name, fn, *args)``)."""
    async with step:
        if not step.done:
            value = fn(*args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
            step.value = value
    return step.value


def check_step_function(name: str, fn: Any, in_loop: bool) -> None:
    """Refuse a callable form that cannot work: `fn` not callable, or used from a sync task.

    Raises:
        TypeError: what was wrong, and the call to write instead.
    """
    if not callable(fn):
        raise TypeError(
            f"ctx.step({name!r}, fn, ...) takes a function to call as its second argument, got "
            f"{type(fn).__name__}: write `await ctx.step({name!r}, download, day)`, or "
            f"`async with ctx.step({name!r}) as step:` for a block"
        )
    if not in_loop:
        raise TypeError(
            f"ctx.step({name!r}, fn, ...) returns an awaitable, which a sync task cannot await: "
            f"in a sync task write `with ctx.step({name!r}) as step:` and, inside, `if not "
            "step.done: step.value = fn(...)`"
        )


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"ctx.step(name) needs a non-empty str naming the step, got {name!r}: e.g. "
            "ctx.step('download')"
        )
