"""`RunTimes`: the recent run times of each hedged task, shared by the workers.

Hedging a straggler (``_hedging.py``) needs to know how long runs of its task usually take. Each
worker keeps the run times of the hedged tasks it ran (DONE runs only: a run that failed fast
says nothing of how long one takes) and, once per hedging pass, merges the ones not shared yet
into a record per task name in `Coordination`'s key-value space (namespace
``taskflow:run-times``): the last `SAMPLE_SIZE` run times of the task, whichever worker ran
them, written with a compare-and-set so that two workers merging at once both land (the loser
reads again and merges again). A worker that cannot reach the store keeps its samples for the
next pass and decides with what it knows.

What does not live here: when to hedge and how (``_hedging.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Final

import msgspec

from .abc import Coordination

__all__ = ["RUN_TIMES_NS", "SAMPLE_SIZE", "RunTimes", "percentile"]

logger = logging.getLogger("taskflow.worker")

RUN_TIMES_NS: Final = "taskflow:run-times"
"""The key-value namespace of the shared run times (one record per task name)."""
SAMPLE_SIZE: Final = 200
"""Run times kept per task name (the most recent)."""
_ATTEMPTS: Final = 3

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[float]).decode


class RunTimes:
    """The run times of the hedged tasks this worker knows, merged with the shared ones.

    Args:
        coordination: Where the shared records are kept.
    """

    __slots__ = ("_coordination", "_known", "_unshared")

    def __init__(self, coordination: Coordination) -> None:
        self._coordination = coordination
        #: Task name -> the run times known (shared and local), most recent last.
        self._known: dict[str, list[float]] = {}
        #: Task name -> the local run times not merged into the shared record yet.
        self._unshared: dict[str, list[float]] = {}

    def add(self, name: str, seconds: float) -> None:
        """A DONE run of task `name` took `seconds`."""
        self._unshared.setdefault(name, []).append(seconds)
        known = self._known.setdefault(name, [])
        known.append(seconds)
        del known[:-SAMPLE_SIZE]

    def unshared_names(self) -> set[str]:
        """The task names with run times not shared yet."""
        return set(self._unshared)

    def samples(self, name: str) -> list[float]:
        """The run times known for task `name` (at most `SAMPLE_SIZE`, most recent last)."""
        return self._known.get(name, [])

    async def share(self, names: Iterable[str]) -> None:
        """Merge this worker's new run times of `names` into the shared records, and read the
        records of the others (a store that fails is tried again next pass)."""
        for name in names:
            try:
                await self._merge(name)
            except Exception:
                logger.warning("could not share the run times of task %r; will retry", name)

    async def _merge(self, name: str) -> None:
        kv = self._coordination
        for _ in range(_ATTEMPTS):
            stored = await kv.kv_get(RUN_TIMES_NS, name)
            shared = [] if stored is None else _decode(stored.value)
            new = self._unshared.get(name, [])
            merged = (shared + new)[-SAMPLE_SIZE:]
            if new:
                version = 0 if stored is None else stored.version
                if await kv.kv_set(RUN_TIMES_NS, name, _encode(merged), expect_version=version):
                    self._unshared.pop(name, None)
                else:
                    continue  # another worker merged first: read its record again
            self._known[name] = merged
            return


def percentile(samples: list[float], p: float) -> float:
    """The `p`-th percentile of `samples` (nearest rank; `samples` not empty)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]
