"""`check_lock_name`: the one rule for the name of a reader/writer lock.

Every entry point that takes a lock name (`QueueTasks.lock`, the contract's lock methods, the
locks a task declares) checks it here, so a bad name is refused where it is given, with the
same message everywhere. What does not live here: the locks themselves
(`taskflow.abc.Coordination` and the backends).
"""

from __future__ import annotations

from typing import Any, Final

from ._exceptions import InvalidOption

__all__ = ["MAX_LOCK_NAME_LENGTH", "check_lock_name"]

MAX_LOCK_NAME_LENGTH: Final = 200
"""The longest lock name, in characters (it becomes part of server keys and rows)."""


def check_lock_name(name: Any) -> str:
    """Return `name` if it can name a lock: a non-empty `str` of at most
    `MAX_LOCK_NAME_LENGTH` characters without NUL.

    Raises:
        InvalidOption: (a `ValueError` and `TypeError`) saying which rule the name broke.
    """
    if not isinstance(name, str):
        raise InvalidOption(
            f"a lock name must be a str, got {type(name).__name__} {name!r}: "
            'name the resource, e.g. app.lock("dwh.sales")'
        )
    if not name:
        raise InvalidOption('a lock name must not be empty: e.g. app.lock("dwh.sales")')
    if len(name) > MAX_LOCK_NAME_LENGTH:
        raise InvalidOption(
            f"lock name {name[:40]!r}... is {len(name)} characters long; the limit is "
            f"{MAX_LOCK_NAME_LENGTH}"
        )
    if "\x00" in name:
        raise InvalidOption(f"lock name {name!r} contains a NUL character, which is not allowed")
    return name
