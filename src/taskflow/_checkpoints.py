"""`RunCheckpoints`: the checkpoints of one run, read once and written through the backend.

A task's context reaches its checkpoints (`Storage.checkpoints`, `Storage.save_checkpoints`)
only through this: it reads the values earlier runs saved once, on first use (a hedge copy also
reads those of the task it copies, so it starts where that run got to), and writes each new value
at once, awaited, fenced by the run's token. A write the backend refuses means another run
holds the task now: the run is stopped as one whose lease the heartbeat found lost
(`Run.interrupt` with "lost", then `LeaseLost`), so nothing it does afterwards is stored.
``ctx.chunks`` keeps its position here, and ``ctx.step`` its record (``_steps.py``).

What does not live here: what the values mean (``_chunks.py``), the contract itself
(`taskflow.abc.Storage`).
"""

from __future__ import annotations

import asyncio
import logging

from ._clock import Clock
from ._exceptions import LeaseLost
from ._message import Checkpoint
from ._run import Run
from .abc import Storage

__all__ = ["RunCheckpoints"]

logger = logging.getLogger("taskflow.worker")


class RunCheckpoints:
    """The checkpoints of `run` on `storage` (see the module docstring).

    Args:
        storage: Where checkpoints are kept.
        clock: The app's clock ("now" of each write).
        run: The run whose token fences the writes.
    """

    __slots__ = ("_clock", "_loaded", "_names", "_run", "_storage")

    def __init__(self, storage: Storage, clock: Clock, run: Run) -> None:
        self._storage = storage
        self._clock = clock
        self._run = run
        self._loaded: dict[str, bytes] | None = None
        #: Names claimed by a user of this run (`claim_name`): one loop per name.
        self._names: set[str] = set()

    def claim_name(self, name: str, refusal: str) -> None:
        """Reserve `name` for one user in this run (a second loop or step with the same name
        would read the first one's record); `refusal` is the error's message if it is taken.

        Raises:
            ValueError: `name` is taken already in this run.
        """
        if name in self._names:
            raise ValueError(refusal)
        self._names.add(name)

    async def read(self, name: str) -> bytes | None:
        """The value an earlier run (or this one) saved under `name`, or None."""
        if self._loaded is None:
            self._loaded = await self._load()
        return self._loaded.get(name)

    async def _load(self) -> dict[str, bytes]:
        """This task's checkpoints; a hedge copy starts from those of the task it copies (what
        that run recorded done is done), its own written over them."""
        own = await self._storage.checkpoints(self._run.task_id)
        message = self._run.message
        if message is None or not message.copy or message.outcome_to is None:
            return own
        inherited = await self._storage.checkpoints(message.outcome_to)
        return {**inherited, **own}

    async def save(self, name: str, value: bytes) -> None:
        """Save `value` under `name`, awaited, fenced by the run's token.

        Raises:
            LeaseLost: the backend refused the write: another run holds the task now. An async
                task is cancelled first, as the heartbeat cancels a run that lost its lease.
        """
        run = self._run
        entry = Checkpoint(run.task_id, run.token, name, value)
        [accepted] = await self._storage.save_checkpoints([entry], now=self._clock.time())
        if accepted:
            if self._loaded is not None:
                self._loaded[name] = value
            return
        logger.warning(
            "task %s: checkpoint %r refused (token %d is no longer the task's): another run "
            "holds it now; abandoning this run",
            run.task_id,
            name,
            run.token,
        )
        run.interrupt("lost")
        if run.task is not None and asyncio.current_task() is run.task:
            await asyncio.sleep(0)  # the interrupt's cancellation lands here, as a heartbeat's
        raise LeaseLost(
            f"task {run.task_id}: the backend refused checkpoint {name!r} of this run (token "
            f"{run.token}): its lease was taken over and another run holds the task now"
        )
