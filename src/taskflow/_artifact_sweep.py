"""`ArtifactSweep`: the housekeeping every worker does for artifacts, now and then.

There is no single cron process: each worker runs a pass every ``cleanup_interval_s``. A pass
reads the due-time index from its cursor (the lowest bucket that may hold entries) up to now,
never every artifact ever made, and for each entry due looks at the artifact's record:

* ``ready`` past its time to be kept: marked ``expired`` (when, and why) and its bytes deleted;
* ``writing`` long past `STALE_WRITE_S` (its worker died mid-put): marked ``abandoned`` (never
  listed) and forgotten at the next pass;
* ended (``deleted``, ``expired``, ``abandoned``): its bytes deleted again (a crash or a failed
  delete may have left them), and past its ``forget_at`` the record dropped;
* anything else: filed again at its own next due time (so two entries that met in one key lose
  nothing).

Several workers doing this at once is safe: each change of a record is a compare-and-set, so one
of them makes it; deleting bytes twice is harmless; an entry is dropped only after what it asked
for is done. Then the store's leftovers of abandoned writes go (`ArtifactStore.sweep_partial`).
The cursor moves past a bucket only once it is empty and a bucket older than the current one
(a host whose clock is a little behind may still file into the current bucket).

What does not live here: the record layout (`_artifact_records.py`), ending an artifact and
filing entries (`_artifacts.py`), the worker that runs the loop (`_worker.py`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Final

import msgspec

from ._artifact_records import (
    CURSOR_KEY,
    ENDED,
    INDEX_NAMESPACE,
    STALE_WRITE_S,
    ArtifactRecord,
    ArtifactState,
    bucket_of,
    decode_cursor,
    decode_due,
    encode_cursor,
    index_namespace,
    kept_for,
    next_due,
    records_namespace,
    split_index_key,
)
from ._artifacts import ArtifactKeeper

__all__ = ["ArtifactSweep", "SweepReport"]

logger = logging.getLogger("taskflow.artifacts")

#: Most index buckets one pass reads (after a long outage the next passes read the rest).
_MAX_BUCKETS_PER_PASS: Final = 1000


@dataclasses.dataclass(slots=True)
class SweepReport:
    """What one pass did."""

    expired: int = 0
    abandoned: int = 0
    forgotten: int = 0
    partial_removed: int = 0
    buckets_read: int = 0


class ArtifactSweep:
    """One worker's artifact housekeeping (see the module docstring).

    Args:
        keeper: The app's `ArtifactKeeper`.
        interval_s: Time between passes (``GlobalConfig.cleanup_interval_s``).
    """

    def __init__(self, keeper: ArtifactKeeper, interval_s: float) -> None:
        self.keeper = keeper
        self.interval_s = interval_s
        #: Passes finished by this sweep (tests sequence on it).
        self.passes = 0

    async def loop(self) -> None:
        """A pass every `interval_s`, until cancelled; a pass that fails is logged and the
        next one tries again."""
        clock = self.keeper.clock
        while True:
            await clock.sleep(self.interval_s)
            try:
                report = await self.run_once()
            except Exception:
                logger.exception(
                    "artifact housekeeping failed; will try again in %.0f s", self.interval_s
                )
                continue
            if report.expired or report.abandoned or report.forgotten:
                logger.info(
                    "artifact housekeeping: %d expired, %d abandoned put(s) dropped, "
                    "%d record(s) forgotten",
                    report.expired,
                    report.abandoned,
                    report.forgotten,
                )

    async def run_once(self) -> SweepReport:
        """One pass, at the clock's now."""
        keeper = self.keeper
        coordination = keeper.coordination
        now = keeper.clock.time()
        report = SweepReport()
        cursor_record = await coordination.kv_get(INDEX_NAMESPACE, CURSOR_KEY)
        if cursor_record is not None:
            cursor = decode_cursor(cursor_record.value)
            last = min(bucket_of(now), cursor + _MAX_BUCKETS_PER_PASS - 1)
            done_below = cursor
            for bucket in range(cursor, last + 1):
                left = await self._sweep_bucket(bucket, now, report)
                if not left and done_below == bucket and bucket < bucket_of(now) - 1:
                    done_below = bucket + 1
            if done_below > cursor:
                await coordination.kv_set(
                    INDEX_NAMESPACE,
                    CURSOR_KEY,
                    encode_cursor(done_below),
                    expect_version=cursor_record.version,
                )
        report.partial_removed = await keeper.store.sweep_partial(older_than=now - STALE_WRITE_S)
        self.passes += 1
        return report

    async def _sweep_bucket(self, bucket: int, now: float, report: SweepReport) -> int:
        """Handle the entries of one bucket that are due; returns how many are left in it."""
        coordination = self.keeper.coordination
        namespace = index_namespace(bucket)
        entries = await coordination.kv_list(namespace)
        report.buckets_read += 1
        left = 0
        for key, versioned in entries.items():
            if decode_due(versioned.value) > now:
                left += 1
                continue
            task_id, name = split_index_key(key)
            try:
                done = await self._look_at(task_id, name, now, report)
                if done:
                    await coordination.kv_delete(namespace, key)
                    await self._refile(task_id, name, now)
            except Exception:
                # One artifact whose bytes cannot be deleted must not stop the others' expiry;
                # its entry stays, and the next pass tries again.
                logger.exception("artifact %r of task %s: housekeeping failed", name, task_id)
                done = False
            left += not done
        return left

    async def _look_at(self, task_id: str, name: str, now: float, report: SweepReport) -> bool:
        """Do what the artifact's record asks for at `now`; False if its record changed under
        us (the entry stays for the next pass)."""
        keeper = self.keeper
        try:
            got = await keeper.get(task_id, name)
        except msgspec.DecodeError:
            logger.warning("task %s: the record of artifact %r is unreadable", task_id, name)
            return True
        if got is None:
            return True
        record, version = got
        if record.state in ENDED:  # its bytes may be left from a crash or a failed delete
            await keeper.store.delete(record.task_id, record.blob)
        due = next_due(record)
        if due is None or due > now:
            return True  # `_refile` files it at its own time
        if record.state is ArtifactState.READY:
            done = await keeper.end(
                record,
                version,
                ArtifactState.EXPIRED,
                kept_for(record),
                now,
                ended_at=record.expires_at,
            )
            report.expired += done
            return done
        if record.state is ArtifactState.WRITING:
            why = f"its put did not finish within {STALE_WRITE_S / 3600:g} h (its worker died?)"
            done = await keeper.end(
                # Forgotten by the next pass, never this one: whether this pass would still
                # read the bucket it is filed in depends on where `now` falls in it.
                record,
                version,
                ArtifactState.ABANDONED,
                why,
                now,
                forget_at=now + 1,
            )
            report.abandoned += done
            return done
        return await self._forget(record, now, report)

    async def _forget(self, record: ArtifactRecord, now: float, report: SweepReport) -> bool:
        assert record.state in ENDED
        keeper = self.keeper
        if await keeper.coordination.kv_delete(records_namespace(record.task_id), record.name):
            report.forgotten += 1
        return True

    async def _refile(self, task_id: str, name: str, now: float) -> None:
        """File the artifact again at its record's next due time, if it has one: the entry
        just dropped may have held it (the entry of what was just done, filed into the same
        bucket and key, or a put of the same name's)."""
        got = await self.keeper.get(task_id, name)
        due = None if got is None else next_due(got[0])
        if due is not None:
            await self.keeper.file_due(task_id, name, max(due, now), now)
