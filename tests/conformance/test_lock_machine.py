"""Conformance: a Hypothesis state machine over the reader/writer locks, under a fake clock.

Random programs of batched acquires (shared or exclusive, waiting or not, short or long
leases), renewals and releases (with current and stale tokens), withdrawals and clock moves
(past leases too) run against the backend under test and, step by step, against the in-memory
reference (`MemoryCoordination`, whose `LockTable` is the plainest reading of the rules). After
every step:

* each call answered as the reference did: the same tokens, renewals and granted owners;
* ``lock_states`` agree: the same holders (mode, token, expiry) and the same waiters in the
  same order;
* an exclusive holder is alone, and each new grant's token is above every earlier one.

Lock names are unique per machine instance, so tokens start alike on both sides.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any, ClassVar, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from taskflow.abc import Broker, Coordination, LockHold, LockMode, LockRequest, LockState
from taskflow.memory import MemoryCoordination
from taskflow.testing import FakeClock

from .conftest import BackendFactory

T = TypeVar("T")

OWNERS = ("a", "b", "c", "d", "e")
MODES = (LockMode.SHARED, LockMode.EXCLUSIVE)
requests_st = st.lists(
    st.tuples(st.integers(0, 1), st.sampled_from(OWNERS), st.sampled_from(MODES), st.booleans()),
    min_size=1,
    max_size=4,
)


def _view(states: Sequence[LockState]) -> list[tuple[Any, ...]]:
    """What both sides must agree on: holders by owner, waiters in queue order."""
    return [
        (
            s.name,
            sorted((h.owner, h.mode, h.token, h.expires_at) for h in s.holders),
            [(w.owner, w.mode, w.since, w.expires_at) for w in s.waiters],
        )
        for s in states
    ]


class LockMachine(RuleBasedStateMachine):
    """Drives one backend's locks and the reference side by side; subclassed per kind."""

    factory: ClassVar[BackendFactory]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.context = type(self).factory()
        broker: Broker = self.run(self.context.__aenter__())
        self.tested: Coordination = broker.coordination
        self.reference = MemoryCoordination()
        self.run(self.reference.open())
        prefix = uuid.uuid4().hex[:8]
        self.names = [f"lm-{prefix}-0", f"lm-{prefix}-1"]
        self.seen: dict[str, set[int]] = {name: set() for name in self.names}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.reference.close())
            self.run(self.context.__aexit__(None, None, None))
        finally:
            self.loop.close()

    def both(self, call: str, *args: Any, **kwargs: Any) -> Any:
        """Make the same call on both sides; returns the reference's answer, asserting the
        tested side gave the same."""
        expected = self.run(getattr(self.reference, call)(*args, **kwargs))
        got = self.run(getattr(self.tested, call)(*args, **kwargs))
        if call in ("release_locks", "withdraw_lock_requests"):  # owners granted: any order
            assert sorted(got) == sorted(expected), (call, args, got, expected)
        else:
            assert got == expected, (call, args, got, expected)
        return expected

    def holds(self) -> list[LockHold]:
        states = self.run(self.reference.lock_states(self.names, now=self.clock.time()))
        return [LockHold(s.name, h.owner, h.token) for s in states for h in s.holders]

    # -- rules ------------------------------------------------------------------------------

    @rule(batch=requests_st, ttl=st.sampled_from([5.0, 20.0]))
    def acquire(self, batch: list[tuple[int, str, LockMode, bool]], ttl: float) -> None:
        requests = [LockRequest(self.names[n], owner, mode, wait) for n, owner, mode, wait in batch]
        self.both("acquire_locks", requests, ttl_s=ttl, now=self.clock.time())

    @rule(data=st.data(), stale=st.booleans())
    def renew(self, data: st.DataObject, stale: bool) -> None:
        holds = self.holds()
        if not holds:
            return
        hold = data.draw(st.sampled_from(holds))
        if stale:
            hold = LockHold(hold.name, hold.owner, hold.token - 1)
        self.both("renew_locks", [hold], ttl_s=20.0, now=self.clock.time())

    @rule(data=st.data(), stale=st.booleans(), ttl=st.sampled_from([5.0, 20.0]))
    def release(self, data: st.DataObject, stale: bool, ttl: float) -> None:
        holds = self.holds()
        if not holds:
            return
        chosen = data.draw(st.lists(st.sampled_from(holds), min_size=1, max_size=3, unique=True))
        if stale:
            chosen = [LockHold(h.name, h.owner, h.token - 1) for h in chosen]
        self.both("release_locks", chosen, ttl_s=ttl, now=self.clock.time())

    @rule(batch=requests_st)
    def withdraw(self, batch: list[tuple[int, str, LockMode, bool]]) -> None:
        requests = [LockRequest(self.names[n], owner, mode) for n, owner, mode, _ in batch]
        self.both("withdraw_lock_requests", requests, ttl_s=20.0, now=self.clock.time())

    @rule(seconds=st.sampled_from([1.0, 4.0, 6.0, 25.0]))
    def advance(self, seconds: float) -> None:
        self.run(self.clock.advance(seconds))

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def states_agree_and_hold_the_rules(self) -> None:
        now = self.clock.time()
        expected = self.run(self.reference.lock_states(self.names, now=now))
        got = self.run(self.tested.lock_states(self.names, now=now))
        assert _view(got) == _view(expected)
        for state in got:
            modes = [h.mode for h in state.holders]
            assert LockMode.EXCLUSIVE not in modes or len(modes) == 1, state
            # A grant not seen before has a token above every earlier one of the lock.
            new = sorted({h.token for h in state.holders} - self.seen[state.name])
            assert not new or new[0] > max(self.seen[state.name], default=0), state
            self.seen[state.name].update(new)


def test_lock_state_machine(backend_factory: BackendFactory, backend_kind: str) -> None:
    """Run the lock machine against this kind (a machine class per kind, with its factory)."""
    machine = type(
        f"LockMachine_{backend_kind}",
        (LockMachine,),
        {"factory": staticmethod(backend_factory)},
    )
    run_state_machine_as_test(machine, settings=settings(stateful_step_count=40, deadline=None))
