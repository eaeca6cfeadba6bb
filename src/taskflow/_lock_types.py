"""The locks a task declares: `Shared` and `Exclusive`, small frozen values naming one
reader/writer lock each (its name checked by `taskflow._locknames`).

A task lists them in its ``locks=[...]`` option (``@app.task(locks=...)`` or per call); the
worker takes them before the run starts (`taskflow._lock_gate`). What does not live here: the
option's rule (`_options.py`), taking, renewing and releasing the locks (`_lock_gate.py`), and
the locks themselves (`Coordination`).
"""

from __future__ import annotations

import dataclasses

from ._locknames import check_lock_name
from ._message import LockMode

__all__ = ["DeclaredLock", "Exclusive", "Shared"]


@dataclasses.dataclass(frozen=True, slots=True)
class Shared:
    """A shared (reader) lock a task declares: any number of tasks hold it together, but not
    while a task holds it `Exclusive`, nor once an exclusive request waits for it.

    ``@app.task(locks=[Shared("dwh.sales")])``

    Raises:
        InvalidOption: `name` is not a non-empty `str` of at most 200 characters without NUL.
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
        InvalidOption: `name` is not a non-empty `str` of at most 200 characters without NUL.
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
