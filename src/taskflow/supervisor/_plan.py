"""Pure planning: how an order's units are split over days and spread over each day's window.

Nothing here does I/O or reads a clock; every function is deterministic in its inputs, so the
unit times of a day computed twice (by a Supervisor that restarted, or in a property test) are
the same times. The Supervisor computes them once at submit (and again only for days an
amendment changes) and stores them with the job.

Days are calendar days of the plan's own time zone (``Plan.tz``): a window of 09:00-21:00
``Europe/Moscow`` is 06:00-18:00 UTC, whatever the host's zone.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping, Sequence
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

__all__ = [
    "DayQuota",
    "Plan",
    "amended_quotas",
    "day_bounds",
    "day_start",
    "even_split",
    "local_date",
    "plan_days",
    "spread_times",
]

PlanKind = Literal["spread", "quotas", "at_once"]
Spacing = Literal["random", "even"]


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """When an order's units run: which days, how many each day, and when within a day.

    Build one with `Plan.spread`, `Plan.quotas` or `Plan.at_once` rather than by hand.

    Attributes:
        kind: ``"spread"`` (the total spread evenly over `start`..`end`), ``"quotas"`` (explicit
            units per day) or ``"at_once"`` (everything now).
        start: First day (spread).
        end: Last day, inclusive (spread).
        per_day: Units per day, if the caller fixed it (checked against the order's total).
        quotas: Units per day, ISO date -> count (quotas).
        window_start: Earliest local time of day a unit runs.
        window_end: Latest local time of day (exclusive); None means midnight at the day's end.
        tz: IANA time zone of the days and the window (``"Europe/Moscow"``).
        spacing: ``"random"`` spreads units like real users (one random moment in each equal
            slice of the window, seeded by order and day so it is reproducible); ``"even"``
            puts them at the slices' midpoints.
    """

    kind: PlanKind
    start: dt.date | None = None
    end: dt.date | None = None
    per_day: int | None = None
    quotas: dict[str, int] = {}
    window_start: dt.time = dt.time(0)
    window_end: dt.time | None = None
    tz: str = "UTC"
    spacing: Spacing = "random"

    @classmethod
    def spread(
        cls,
        start: dt.date,
        end: dt.date,
        *,
        per_day: int | None = None,
        window: tuple[dt.time, dt.time | None] = (dt.time(0), None),
        tz: str = "UTC",
        spacing: Spacing = "random",
    ) -> Plan:
        """The order's total spread evenly over the days `start`..`end` (inclusive).

        ``Plan.spread(date(2026, 12, 1), date(2026, 12, 14), per_day=10,
        window=(time(9), time(21)), tz="Europe/Moscow")``: 10 a day between 09:00 and 21:00
        Moscow time. When the total does not divide evenly, the extra units go to days spaced
        evenly over the range (never all to the first days).
        """
        return cls(
            kind="spread",
            start=start,
            end=end,
            per_day=per_day,
            window_start=window[0],
            window_end=window[1],
            tz=tz,
            spacing=spacing,
        )

    @classmethod
    def quotas_per_day(
        cls,
        quotas: Mapping[dt.date, int],
        *,
        window: tuple[dt.time, dt.time | None] = (dt.time(0), None),
        tz: str = "UTC",
        spacing: Spacing = "random",
    ) -> Plan:
        """Explicit units per day: ``Plan.quotas_per_day({date(2026, 12, 1): 5, ...})``."""
        return cls(
            kind="quotas",
            quotas={day.isoformat(): int(n) for day, n in sorted(quotas.items())},
            window_start=window[0],
            window_end=window[1],
            tz=tz,
            spacing=spacing,
        )

    @classmethod
    def at_once(cls, *, tz: str = "UTC") -> Plan:
        """Every unit as soon as the order is submitted (one job)."""
        return cls(kind="at_once", tz=tz)

    def zone(self) -> ZoneInfo:
        """The plan's time zone. Raises `ValueError` if the name is unknown."""
        try:
            return ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {self.tz!r}: use an IANA name such as 'Europe/Moscow' or 'UTC'"
            ) from None

    def days(self) -> list[dt.date]:
        """The calendar days this plan covers (empty for `at_once`)."""
        if self.kind == "spread":
            assert self.start is not None and self.end is not None
            return [
                self.start + dt.timedelta(days=i) for i in range((self.end - self.start).days + 1)
            ]
        if self.kind == "quotas":
            return [dt.date.fromisoformat(day) for day in sorted(self.quotas)]
        return []

    def check(self, total: int) -> None:
        """Raise `ValueError` saying what is wrong if this plan cannot carry `total` units."""
        if total < 0:
            raise ValueError(f"an order's total must be >= 0, got {total}")
        self.zone()
        if self.kind == "spread":
            if self.start is None or self.end is None or self.end < self.start:
                raise ValueError(
                    f"Plan.spread needs start <= end, got start={self.start} end={self.end}"
                )
            if self.per_day is not None and self.per_day * len(self.days()) != total:
                raise ValueError(
                    f"Plan.spread(per_day={self.per_day}) over {len(self.days())} days makes "
                    f"{self.per_day * len(self.days())} units, but the order's total is {total}; "
                    "drop per_day (the total is then spread evenly) or make them agree"
                )
        if self.kind == "quotas":
            if any(n < 0 for n in self.quotas.values()):
                raise ValueError(f"per-day quotas must be >= 0, got {self.quotas}")
            if sum(self.quotas.values()) != total:
                raise ValueError(
                    f"the per-day quotas sum to {sum(self.quotas.values())}, but the order's "
                    f"total is {total}"
                )
        if (
            self.kind != "at_once"
            and self.window_end is not None
            and self.window_end <= self.window_start
        ):
            raise ValueError(
                f"the window must end after it starts, got {self.window_start}-"
                f"{self.window_end} (a window across midnight is not supported)"
            )


class DayQuota(msgspec.Struct, frozen=True):
    """How many units one day of a plan carries."""

    day: dt.date
    count: int


def even_split(total: int, parts: int) -> list[int]:
    """Split `total` into `parts` integers differing by at most one, the larger ones spaced
    evenly (``even_split(10, 4) == [2, 3, 2, 3]``), summing to `total`."""
    if parts <= 0:
        raise ValueError(f"cannot split {total} units over {parts} days")
    return [(i + 1) * total // parts - i * total // parts for i in range(parts)]


def plan_days(plan: Plan, total: int, today: dt.date) -> list[DayQuota]:
    """The per-day quotas of `total` units under `plan` (days with 0 units included).

    `today` is the day (in the plan's zone) an `at_once` order runs.
    """
    if plan.kind == "at_once":
        return [DayQuota(today, total)]
    if plan.kind == "quotas":
        return [DayQuota(dt.date.fromisoformat(d), n) for d, n in sorted(plan.quotas.items())]
    days = plan.days()
    return [DayQuota(day, n) for day, n in zip(days, even_split(total, len(days)), strict=True)]


def day_bounds(plan: Plan, day: dt.date) -> tuple[float, float]:
    """When `day`'s window opens and closes, in epoch seconds: the plan's window (its time of day
    start and end) on that day, in the plan's time zone.

    A day's units are planned inside this window, so at its end every unit of the day is due.
    Tests and demos on a `taskflow.testing.FakeClock` jump there to run a whole day at once:

    ```python
    start, end = day_bounds(plan, date(2026, 12, 1))
    await clock.set(end)   # every unit of 1 December is due now
    ```

    Args:
        plan: The order's plan (its window and time zone are used, not its days: any date works).
        day: The calendar day, in the plan's time zone.

    Returns:
        ``(start, end)``: the window's start and its (exclusive) end; a window without an end
        closes at the next local midnight.
    """
    zone = plan.zone()
    start = dt.datetime.combine(day, plan.window_start, tzinfo=zone)
    if plan.window_end is None:
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
    else:
        end = dt.datetime.combine(day, plan.window_end, tzinfo=zone)
    return start.timestamp(), end.timestamp()


def day_start(plan: Plan, day: dt.date) -> float:
    """Local midnight at the start of `day` in the plan's zone, in epoch seconds."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=plan.zone()).timestamp()


def local_date(plan: Plan, when: float) -> dt.date:
    """The calendar day of epoch time `when` in the plan's zone."""
    return dt.datetime.fromtimestamp(when, tz=plan.zone()).date()


def spread_times(plan: Plan, day: dt.date, count: int, *, seed: str) -> list[float]:
    """`count` moments within `day`'s window, ascending: one per equal slice of the window.

    Random spacing picks a moment in each slice from a generator seeded by `seed` and the day,
    so the same inputs always give the same times.
    """
    if count <= 0:
        return []
    start, end = day_bounds(plan, day)
    width = (end - start) / count
    rng = random.Random(f"{seed}:{day.isoformat()}")
    times: list[float] = []
    for slot in range(count):
        offset = rng.random() if plan.spacing == "random" else 0.5
        moment = start + (slot + offset) * width
        times.append(min(moment, end - 1e-3) if moment >= end else moment)
    return times


def amended_quotas(
    days: Sequence[dt.date], remaining: int, fixed: Mapping[dt.date, int]
) -> list[DayQuota]:
    """Quotas for the not-yet-started `days` after an amendment: `fixed` days keep the counts
    given, the rest share what remains evenly.

    Raises:
        ValueError: the fixed counts exceed what remains, or units remain with no day to go to.
    """
    free = [d for d in days if d not in fixed]
    rest = remaining - sum(fixed.values())
    if rest < 0:
        raise ValueError(
            f"the amended quotas ({sum(fixed.values())} units) exceed the {remaining} units not "
            "yet started; pass total= to change the order's total"
        )
    if rest and not free:
        raise ValueError(
            f"{rest} units are left with no day to run on; add days (end=...), raise the "
            "quotas, or pass total= to change the order's total"
        )
    shares = dict(zip(free, even_split(rest, len(free)), strict=True)) if free else {}
    return [DayQuota(d, fixed.get(d, shares.get(d, 0))) for d in sorted({*days, *fixed})]
