"""Fenced key-value records: `FencedValue`, `fenced_set` and `fenced_get`.

A fenced record of the backend's key-value space keeps, beside its value, the fencing token of
the writer that wrote it last; a write with a lower token is refused. This is what makes a
leader's token (``term.token``) or a lock's useful for state the backend keeps itself: once a
newer holder has written a record, the writes of an older one - resumed after a pause past its
lease - are refused, atomically (a compare-and-set on the record's version).

What does not live here: the key-value space (`taskflow.abc.Coordination.kv_*`), the holders
that hand out tokens (``_leadership.py``, ``_locking.py``).
"""

from __future__ import annotations

import msgspec

from .abc import Coordination

__all__ = ["FencedValue", "fenced_get", "fenced_set"]


class FencedValue(msgspec.Struct, frozen=True, array_like=True):
    """A fenced record: its value and the fencing token of the writer that wrote it."""

    token: int
    value: bytes


async def fenced_set(
    coordination: Coordination, namespace: str, key: str, value: bytes, *, token: int
) -> bool:
    """Write `value` to the record unless a writer with a higher token wrote it already.

    Returns True if written (the record now carries `token`), False if refused: the record
    holds a newer holder's write. Writes of the same token (one term writing again) pass.
    """
    while True:
        current = await coordination.kv_get(namespace, key)
        expect = 0
        if current is not None:
            if _decode(current.value).token > token:
                return False
            expect = current.version
        data = msgspec.msgpack.encode(FencedValue(token, value))
        if await coordination.kv_set(namespace, key, data, expect_version=expect) is not None:
            return True
        # Someone wrote it between the read and the write: read again and decide again.


async def fenced_get(coordination: Coordination, namespace: str, key: str) -> FencedValue | None:
    """The record written by `fenced_set`, or None if there is none."""
    current = await coordination.kv_get(namespace, key)
    return None if current is None else _decode(current.value)


def _decode(data: bytes) -> FencedValue:
    return msgspec.msgpack.decode(data, type=FencedValue)
