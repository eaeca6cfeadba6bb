"""`Schedule`: when a periodic task is due, as a pure function of time.

A schedule is a cron expression in a time zone (parsed and walked by `cronsim`, which follows
Debian's cron, DST quirks included) or a fixed interval anchored on the Unix epoch (slots at
``k * every`` seconds, so every host computes the same slots without talking to the others).
A *slot* is one due instant, as epoch seconds; `slot_id` names the task run of a slot, which is
what makes a slot run once however many workers enqueue it.

What does not live here: the per-schedule state in the backend (`_schedule_state.py`), the
loop that enqueues slots (`_scheduler.py`), the decorator (`_app.py`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ._exceptions import TaskRegistrationError

__all__ = ["Schedule", "make_schedule", "slot_id"]

#: Most slots one catch-up walks through for a cron schedule (a minute-by-minute schedule down
#: for two months); older missed slots are not looked at.
MAX_CRON_WALK: Final = 100_000
#: Most missed slots a schedule may catch up.
MAX_CATCH_UP: Final = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    """A periodic task's schedule, as declared with `QueueTasks.periodic`.

    Attributes:
        name: The schedule's name (default: the task's name); it names its state and its runs.
        task: The name of the task each slot runs.
        cron: The cron expression (None for an interval schedule).
        every_s: The interval in seconds (None for a cron schedule).
        tz: The time zone name the cron expression is read in (``"UTC"`` by default).
        args: Positional arguments of every run.
        kwargs: Keyword arguments of every run.
        queue: The queue runs go to (None: the task's own).
        catch_up: After an outage, how many missed slots run (the latest ones, oldest first);
            0 skips them all and runs the next slot only.
    """

    name: str
    task: str
    cron: str | None
    every_s: float | None
    tz: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    queue: str | None = None
    catch_up: int = 0

    def next_after(self, t: float) -> float:
        """The first slot strictly after `t` (epoch seconds)."""
        if self.every_s is not None:
            every_us = _microseconds(self.every_s)
            return (_index(t, every_us) + 1) * every_us / 1e6
        return next(self._cron_from(t))

    def slots_between(self, after: float, until: float, *, keep: int | None = None) -> list[float]:
        """Slots in ``(after, until]``, oldest first; with `keep`, only the last `keep` of them."""
        if keep is not None and keep <= 0:
            return []
        if self.every_s is not None:
            every_us = _microseconds(self.every_s)
            first = _index(after, every_us) + 1
            last = _index(until, every_us)
            if keep is not None:
                first = max(first, last - keep + 1)
            return [k * every_us / 1e6 for k in range(first, last + 1)]
        slots: deque[float] = deque(maxlen=keep)
        for n, slot in enumerate(self._cron_from(after)):
            if slot > until or n >= MAX_CRON_WALK:
                break
            slots.append(slot)
        return list(slots)

    def _cron_from(self, t: float) -> Iterator[float]:
        assert self.cron is not None
        zone = ZoneInfo(self.tz)
        # cronsim yields wall-clock matches after its start. Started inside the second pass of
        # a repeated (fall-back) hour it can yield a match of the first pass, an instant before
        # the start, which was decided already: only instants after `t` are slots.
        start = datetime.fromtimestamp(t, zone)
        for slot in CronSim(self.cron, start):
            instant = slot.timestamp()
            if instant > t:
                yield instant


def _microseconds(seconds: float) -> int:
    # Slots are counted in whole microseconds, so that k * 0.1 s is the slot a person reads
    # (1700000000.1, not 1700000000.1000001) and every host computes the same one.
    return max(1, round(seconds * 1_000_000))


def _index(t: float, every_us: int) -> int:
    """The number of the last slot at or before `t`."""
    return math.floor(round(t * 1_000_000) / every_us)


def slot_id(schedule: str, slot: float) -> str:
    """The task id of one slot's run: the same on every host, so the backend's id dedup lets
    exactly one enqueue of a slot through."""
    return f"periodic:{schedule}:{round(slot * 1000)}"


def make_schedule(
    task: str,
    *,
    cron: str | None,
    every: timedelta | float | None,
    tz: str | None,
    name: str | None,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any] | None,
    queue: str | None,
    catch_up: int,
) -> Schedule:
    """Check a `QueueTasks.periodic` declaration and build its `Schedule`.

    Raises:
        TaskRegistrationError: neither or both of `cron` and `every`, an invalid cron
            expression, an unknown time zone, an interval <= 0, `tz` with `every`, a
            negative `catch_up`, or an empty name.
    """
    label = name or task
    if (cron is None) == (every is None):
        raise TaskRegistrationError(
            f"periodic task {label!r}: give exactly one of cron= and every=, e.g. "
            "@app.periodic(cron='*/5 * * * *') or @app.periodic(every=timedelta(seconds=30))"
        )
    if not label or "\x00" in label:
        raise TaskRegistrationError("a schedule name must be a non-empty string without NUL")
    if (
        not isinstance(catch_up, int)
        or isinstance(catch_up, bool)
        or not 0 <= catch_up <= MAX_CATCH_UP
    ):
        raise TaskRegistrationError(
            f"periodic task {label!r}: catch_up must be an integer from 0 (skip missed "
            f"slots) to {MAX_CATCH_UP}, got {catch_up!r}"
        )
    every_s = _interval_s(label, every, tz) if every is not None else None
    zone = _zone(label, tz or "UTC") if cron is not None else "UTC"
    if cron is not None:
        _check_cron(label, cron, zone)
    return Schedule(
        name=label,
        task=task,
        cron=cron,
        every_s=every_s,
        tz=zone,
        args=tuple(args),
        kwargs=dict(kwargs or {}),
        queue=queue,
        catch_up=catch_up,
    )


def _interval_s(label: str, every: timedelta | float, tz: str | None) -> float:
    if tz is not None:
        raise TaskRegistrationError(
            f"periodic task {label!r}: tz= applies to cron= only (an interval is the same "
            "in every time zone); drop tz="
        )
    if isinstance(every, timedelta):
        seconds = every.total_seconds()
    elif isinstance(every, int | float) and not isinstance(every, bool):
        seconds = float(every)
    else:
        raise TaskRegistrationError(
            f"periodic task {label!r}: every= must be a timedelta or seconds, got {every!r}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise TaskRegistrationError(
            f"periodic task {label!r}: every= must be > 0, got {every!r} "
            "(e.g. every=timedelta(milliseconds=500))"
        )
    return seconds


def _zone(label: str, tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TaskRegistrationError(
            f"periodic task {label!r}: unknown time zone {tz!r}; use an IANA name such as "
            "'Europe/Moscow' or 'UTC'"
        ) from exc
    return tz


def _check_cron(label: str, cron: str, tz: str) -> None:
    if not isinstance(cron, str):
        raise TaskRegistrationError(
            f"periodic task {label!r}: cron= must be a string, got {cron!r}"
        )
    try:
        CronSim(cron, datetime.now(UTC).astimezone(ZoneInfo(tz)))
    except CronSimError as exc:
        raise TaskRegistrationError(
            f"periodic task {label!r}: invalid cron expression {cron!r}: {exc} (five fields: "
            "minute hour day-of-month month day-of-week, e.g. '*/5 * * * *')"
        ) from exc
