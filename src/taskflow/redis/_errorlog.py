"""Reading the Redis error log: each queue's capped stream of failed attempts.

``complete.lua`` appends an entry to ``<prefix>{<queue>}:errors`` in the same script that
stores a RETRY or FAILED outcome with an error (capped with ``MAXLEN ~`` at
``errors_maxlen``). This module reads the streams of the queues asked for, newest first, and
merges them. What does not live here: the writing (``lua/complete.lua``), the entry's fields
(``_codec.failed_from``).
"""

from __future__ import annotations

from typing import Any, Final

from .._message import FailedAttempt
from ._codec import failed_from

__all__ = ["read_errors"]

#: Entries read per round trip while walking a stream back in time.
_PAGE: Final = 500


async def read_errors(
    client: Any,
    streams: dict[str, str],
    since: float | None,
    name: str | None,
    limit: int,
) -> list[FailedAttempt]:
    """The newest `limit` failed attempts of the `streams` (queue -> stream key), newest
    first, at or after `since`, of task `name` (None: any)."""
    found: list[FailedAttempt] = []
    for queue, key in streams.items():
        found += await _read_stream(client, queue, key, since, name, limit)
    found.sort(key=lambda e: e.at, reverse=True)
    return found[:limit]


async def _read_stream(
    client: Any, queue: str, key: str, since: float | None, name: str | None, limit: int
) -> list[FailedAttempt]:
    """Walk one stream back from its newest entry until `limit` match or the entries are
    older than `since` (entries are appended in time order, give or take the workers' clocks)."""
    out: list[FailedAttempt] = []
    end = "+"
    while len(out) < limit:
        page = await client.xrevrange(key, end, "-", count=_PAGE)
        for _entry_id, fields in page:
            entry = failed_from(queue, fields)
            if since is not None and entry.at < since:
                return out
            if name is None or entry.name == name:
                out.append(entry)
        if len(page) < _PAGE:
            break
        end = f"({page[-1][0].decode()}"
    return out[:limit]
