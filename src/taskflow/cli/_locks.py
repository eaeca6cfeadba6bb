"""``taskflow locks``: the reader/writer locks of an app's backend, their holders and waiters.

What does not live here: the locks themselves (`taskflow.abc.Coordination`), in-code locks
(`taskflow.AppLock`).
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from .._app import QueueTasks
from .._locknames import check_lock_name
from .._message import LockState
from ._common import shared_app
from ._errors import ExitCode
from ._show import emit_json

__all__ = ["locks", "locks_table"]


def locks(args: argparse.Namespace) -> int:
    """``taskflow locks``: every lock with a holder or a waiter (or the named ones)."""
    names = [check_lock_name(name) for name in args.names] or None
    app = shared_app(args.app, "locks")
    return anyio.run(_locks, app, names, args.json)


async def _locks(app: QueueTasks, names: list[str] | None, as_json: bool) -> int:
    async with app:
        now = app.clock.time()
        states = await app.coordination.lock_states(names, now=now)
    if as_json:
        for state in states:
            emit_json(lock_data(state, now))
    else:
        print(locks_table(states, now))
    return ExitCode.OK


def lock_data(state: LockState, now: float) -> dict[str, Any]:
    """One lock as the JSON document ``--json`` prints: holders, then waiters in queue order."""
    return {
        "name": state.name,
        "holders": [
            {
                "owner": h.owner,
                "mode": h.mode.value,
                "token": h.token,
                "expires_at": h.expires_at,
                "expires_in_s": round(h.expires_at - now, 3),
            }
            for h in state.holders
        ],
        "waiters": [
            {
                "position": position,
                "owner": w.owner,
                "mode": w.mode.value,
                "since": w.since,
                "waiting_s": round(now - w.since, 3),
                "expires_at": w.expires_at,
            }
            for position, w in enumerate(state.waiters, 1)
        ],
    }


def locks_table(states: list[LockState], now: float) -> str:
    """Locks as an aligned table: per lock its holders, then its waiters in queue order."""
    if not states:
        return "no lock is held or waited for"
    header = ("LOCK", "ROLE", "MODE", "TOKEN", "OWNER", "TIME")
    cells: list[tuple[str, ...]] = [header]
    for state in states:
        for h in state.holders:
            expires = f"expires in {max(h.expires_at - now, 0):.1f}s"
            cells.append((state.name, "holder", h.mode.value, str(h.token), h.owner, expires))
        for position, w in enumerate(state.waiters, 1):
            since = f"waiting {max(now - w.since, 0):.1f}s"
            cells.append((state.name, f"waiter #{position}", w.mode.value, "-", w.owner, since))
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    holders = sum(len(s.holders) for s in states)
    waiters = sum(len(s.waiters) for s in states)
    lines.append(f"{len(states)} lock(s), {holders} holder(s), {waiters} waiter(s)")
    return "\n".join(lines)
