"""Task ids: the one generator every backend uses, and the shape it gives them.

A task id is 30 characters of lowercase Crockford base32 (``0-9`` and ``a-z`` without
``i``, ``l``, ``o``, ``u``), so it goes into a URL path, a shell command, a file name or a
Redis key as it is, with no escaping or quoting::

    1m90zdc98  000  h50p95aexx  dc0vv2d8
    time       seq  stem        queue code ("default")
    9          3    10          8 characters

- *time*: milliseconds since the Unix epoch by the host's wall clock (9 characters last until
  the year 3084). It is for ordering only; a task's ``created_at`` comes from the app's clock.
- *seq*: counts the ids this process made in the same millisecond (32,768 of them; past that
  the next millisecond is taken early, so the time part never runs backwards).
- *stem*: 50 random bits drawn once per process (again in a child after ``os.fork``), so
  processes on any number of hosts make unique ids without coordinating.
- *queue code*: 40 bits of a hash of the queue's name (`queue_code`). The Redis backend routes
  an id to its queue's keys with it (``docs/backends/redis.md``); the other backends ignore it.

Ids sort by creation time, to the millisecond across processes (as far as their hosts' clocks
agree) and strictly in creation order within one process. ``TASK_ID_PATTERN`` is the shape as a
regular expression. Ids chosen by users (``options(task_id=...)``) need not have it.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from typing import Final

__all__ = [
    "TASK_ID_LENGTH",
    "TASK_ID_PATTERN",
    "derived_task_id",
    "is_task_id",
    "new_task_id",
    "queue_code",
]

ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"
#: Characters of each part, in order.
_TIME, _SEQ, _STEM, CODE_LENGTH = 9, 3, 10, 8
TASK_ID_LENGTH: Final = _TIME + _SEQ + _STEM + CODE_LENGTH
#: The shape of every id taskflow makes, on every backend.
TASK_ID_PATTERN: Final = rf"[0-9a-hjkmnp-tv-z]{{{TASK_ID_LENGTH}}}"
_SEQ_LIMIT: Final = 32**_SEQ
_PAIRS: Final = tuple(a + b for a in ALPHABET for b in ALPHABET)
_is_shaped: Final = re.compile(TASK_ID_PATTERN).fullmatch


def _base32(value: int, width: int) -> str:
    """`value` in `width` characters of `ALPHABET`, most significant first."""
    chars = []
    for _ in range(width):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def queue_code(queue: str) -> str:
    """The 8-character code the ids of `queue` end with (40 bits of its BLAKE2b hash)."""
    digest = hashlib.blake2b(queue.encode(), digest_size=5).digest()
    return _base32(int.from_bytes(digest, "big"), CODE_LENGTH)


def is_task_id(value: str) -> bool:
    """True if `value` has the shape of the ids taskflow makes (`TASK_ID_PATTERN`)."""
    return len(value) == TASK_ID_LENGTH and _is_shaped(value) is not None


class _Generator:
    """Time, sequence and stem of the ids of this process (one per process, see `new_task_id`)."""

    def __init__(self) -> None:
        self._reseed()

    def _reseed(self) -> None:
        # Also the child's half of os.fork: a new stem, and a lock no other thread holds.
        self._lock = threading.Lock()
        self._stem = _base32(int.from_bytes(os.urandom(7), "big") >> 6, _STEM)
        self._ms = 0
        self._seq = 0
        self._head = ""

    def new(self, code: str) -> str:
        """A new task id ending with `code` (a `queue_code`); see the module docstring."""
        ms = time.time_ns() // 1_000_000
        with self._lock:
            if ms > self._ms:
                self._ms, seq = ms, 0
                self._head = _base32(ms, _TIME)
            else:  # the same millisecond, or the clock went back: keep counting
                seq = self._seq + 1
                if seq == _SEQ_LIMIT:
                    self._ms, seq = self._ms + 1, 0
                    self._head = _base32(self._ms, _TIME)
            self._seq = seq
            head = self._head
        return f"{head}{ALPHABET[seq >> 10]}{_PAIRS[seq & 1023]}{self._stem}{code}"


# Process-wide on purpose, like the `random` module's generator: one stem and one sequence per
# process keep every id of the process unique and ordered, whichever app or broker makes it.
_generator: Final = _Generator()
os.register_at_fork(after_in_child=_generator._reseed)
#: A new task id ending with `code` (a `queue_code`): ``new_task_id(code) -> str``.
new_task_id: Final = _generator.new


def derived_task_id(base_id: str, key: str, queue: str) -> str:
    """The id of a task derived from `base_id` under `key` (``"shard:3"``, ``"join"``,
    ``"hedge:1"``), for a message of `queue`: always the same for the same three, so a run that
    is repeated after a crash enqueues the same ids again and the backend's id dedup keeps one
    task of each. It has the shape of every id (`is_task_id`, routed by its queue code) and
    sorts with `base_id`'s time (its first 12 characters)."""
    digest = hashlib.blake2b(f"{base_id}\x00{key}".encode(), digest_size=7).digest()
    stem = _base32(int.from_bytes(digest, "big") >> 6, _STEM)
    head = base_id[: _TIME + _SEQ] if is_task_id(base_id) else _base32(0, _TIME + _SEQ)
    return f"{head}{stem}{queue_code(queue)}"
