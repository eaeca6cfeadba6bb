"""Paging a queue's tasks and a task's events on the server, without ever loading a queue.

No backend lists a queue's tasks by status, so a queue's task list is read from its event
stream (capped at ``events_maxlen`` per queue): a page scans at most `SCAN_LIMIT` events after
the cursor it is given, collects the tasks created in them (their first ``queued``,
``scheduled`` or ``waiting`` event), reads their records in batches (one round trip each) and
keeps those that match, until ``limit`` match or the scan ends. The answer's ``next`` cursor
resumes the scan; a filtered page may hold fewer items than ``limit`` and still have a
``next``. Dead letters page by offset (`Broker.dead_letters`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .._message import Event, EventKind, TaskRecord
from ..abc import Storage

__all__ = ["SCAN_LIMIT", "EventPage", "TaskPage", "task_events", "task_page"]

#: The most events one page request scans.
SCAN_LIMIT: Final = 5000
#: Events read per round trip while scanning.
_READ: Final = 1000
#: Records read per round trip while a status filter looks for matches.
_FILTERED_BATCH: Final = 500
#: The kinds of a task's first event: it was stored (enqueued, delayed, or waiting).
CREATED: Final = frozenset({EventKind.QUEUED, EventKind.SCHEDULED, EventKind.WAITING})


@dataclass
class TaskPage:
    """A page of a queue's tasks, and where the next page starts (None: the stream's end)."""

    records: list[TaskRecord] = field(default_factory=list)
    next: str | None = None
    """Where the next page starts; None: the scan reached the stream's end."""
    cursor: str | None = None
    """Where the scan stopped (at the end too): resume from it to see tasks created later."""
    scanned: int = 0
    before: dict[str, str | None] = field(default_factory=dict)
    """Per task listed, the cursor of the event before its creation: read its events after it
    (`task_events`) to start right at the task's first event."""


@dataclass
class EventPage:
    """A page of one task's events, and where the next page starts (None: the stream's end)."""

    events: list[Event] = field(default_factory=list)
    next: str | None = None
    cursor: str | None = None
    """Where the scan stopped (at the end too)."""


async def _created_ids(
    storage: Storage, queue: str, limit: int, name: str | None, page: TaskPage
) -> dict[str, str]:
    """Scan on from `page.cursor` for up to `limit` tasks created in the stream (of name
    `name`), each with the cursor of its creation; move `page.cursor` and `page.scanned` on,
    and set `page.next` (None: the scan reached the stream's end)."""
    found: dict[str, str] = {}
    page.next = page.cursor
    while page.scanned < SCAN_LIMIT and len(found) < limit:
        want = min(_READ, SCAN_LIMIT - page.scanned)
        events = await storage.read_events(queue, after=page.cursor, limit=want)
        for event in events:
            page.scanned += 1
            before, page.cursor = page.cursor, event.cursor
            page.next = event.cursor
            if _is_creation(event, name) and event.task_id not in found:
                found[event.task_id] = event.cursor
                page.before[event.task_id] = before
                if len(found) == limit:
                    break
        if len(events) < want and len(found) < limit:  # the stream's end, for now
            page.next = None
            break
    return found


def _is_creation(event: Event, name: str | None) -> bool:
    return event.kind in CREATED and event.attempt == 0 and (name is None or event.name == name)


async def task_page(
    storage: Storage,
    queue: str,
    *,
    after: str | None,
    limit: int,
    now: float,
    name: str | None = None,
    status: str | None = None,
) -> TaskPage:
    """Up to `limit` tasks of `queue` created after cursor `after` (None: from the oldest kept
    event), of name `name` and status `status` (None: any); see the module docstring. Records
    are read in batches of `limit` (500 with a status filter), one round trip each, until
    `limit` match or `SCAN_LIMIT` events were scanned."""
    page = TaskPage(cursor=after)
    batch = limit if status is None else max(limit, _FILTERED_BATCH)
    while len(page.records) < limit and page.scanned < SCAN_LIMIT:
        found = await _created_ids(storage, queue, batch, name, page)
        records = await storage.get_many(list(found), now=now) if found else []
        for record in records:
            if record is None or (status is not None and record.status.value != status):
                continue
            page.records.append(record)
            if len(page.records) == limit:  # the next page starts after this one's creation
                page.cursor = page.next = found[record.id]
                return page
        if page.next is None:
            break
    return page


async def task_events(
    storage: Storage, queue: str, task_id: str, *, after: str | None, limit: int
) -> EventPage:
    """Up to `limit` events of task `task_id` in `queue`'s stream after cursor `after`,
    scanning at most `SCAN_LIMIT` events."""
    page = EventPage(cursor=after)
    cursor, scanned = after, 0
    while scanned < SCAN_LIMIT:
        events = await storage.read_events(
            queue, after=cursor, limit=min(_READ, SCAN_LIMIT - scanned)
        )
        if not events:
            return page
        for event in events:
            scanned += 1
            cursor = page.cursor = event.cursor
            if event.task_id == task_id:
                page.events.append(event)
                if len(page.events) == limit:
                    page.next = cursor
                    return page
    page.next = cursor
    return page
