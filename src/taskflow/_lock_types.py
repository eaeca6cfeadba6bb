"""The locks a task declares: `Shared` and `Exclusive`, small frozen values naming one
reader/writer lock each, and the one check of a lock's name.

A task lists them in its ``locks=[...]`` option (``@app.task(locks=...)`` or per call); the
worker takes them before the run starts (`taskflow._locking`). What does not live here: the
option's rule (`_options.py`), taking, renewing and releasing the locks (`_locking.py`), and
the locks themselves (`Coordination`).
"""

from __future__ import annotations

import dataclasses
from typing import Final

from ._exceptions import InvalidOption
from ._message import LockMode

__all__ = ["MAX_LOCK_NAME", "DeclaredLock", "Exclusive", "Shared", "check_lock_name"]

#: Longest lock name, in characters (names travel in every message that declares them).
MAX_LOCK_NAME: Final = 200


def check_lock_name(name: object) -> str:
    """`name` if it can name a lock: a non-empty string without NUL, at most `MAX_LOCK_NAME`
    characters.

    Raises:
        InvalidOption: it cannot.
    """
    if not isinstance(name, str) or not name or "\x00" in name or len(name) > MAX_LOCK_NAME:
        raise InvalidOption(
            f"a lock name must be a non-empty string without NUL of at most {MAX_LOCK_NAME} "
            f"characters (e.g. 'dwh.sales'), got {name!r}"
        )
    return name


@dataclasses.dataclass(frozen=True, slots=True)
class Shared:
    """A shared (reader) lock a task declares: any number of tasks hold it together, but not
    while a task holds it `Exclusive`, nor once an exclusive request waits for it.

    ``@app.task(locks=[Shared("dwh.sales")])``

    Raises:
        InvalidOption: `name` is not a non-empty string without NUL of at most 200 characters.
    """

    name: str

    def __post_init__(self) -> None:
        check_lock_name(self.name)

    @property
    def mode(self) -> LockMode:
        """`LockMode.SHARED`."""
        return LockMode.SHARED


@dataclasses.dataclass(frozen=True, slots=True)
class Exclusive:
    """An exclusive (writer) lock a task declares: its holder holds it alone, with no shared
    holders. Once it waits, shared requests made after it wait behind it.

    ``@app.task(locks=[Exclusive("dwh.sales")])``

    Raises:
        InvalidOption: `name` is not a non-empty string without NUL of at most 200 characters.
    """

    name: str

    def __post_init__(self) -> None:
        check_lock_name(self.name)

    @property
    def mode(self) -> LockMode:
        """`LockMode.EXCLUSIVE`."""
        return LockMode.EXCLUSIVE


DeclaredLock = Shared | Exclusive
"""One lock of a task's ``locks`` option."""
