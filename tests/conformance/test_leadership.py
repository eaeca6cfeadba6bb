"""``app.leadership`` on every backend: one holder at a time, the token growing with each new
holder, try and leader_of, the loss of a lapsed role, and fenced writes refused once a newer
holder wrote (``term.fenced_set``). The lease rules underneath are test_coordination.py's; the
details of campaigning and renewing under a fake clock are tests/core/test_leadership.py's.
"""

from __future__ import annotations

import asyncio

import anyio
import pytest

from taskflow import LeadershipLost, QueueTasks
from taskflow.abc import Broker
from taskflow.testing import FakeClock

TTL = 3.0


def app_on(backend: Broker, clock: FakeClock | None = None) -> QueueTasks:
    return QueueTasks("leaders", broker=backend, clock=clock)


async def test_candidates_lead_one_at_a_time_with_growing_tokens(backend: Broker) -> None:
    """Several candidates on the real clock, each leading twice for a moment: never two at
    once, as they see it and as the store says, and every term's token above the last."""
    app = app_on(backend)
    inside: list[str] = []
    tokens: list[int] = []

    async def candidate(n: int) -> None:
        for _ in range(2):
            async with app.leadership("gen", ttl=1) as term:
                inside.append(term.owner)
                assert len(inside) == 1
                info = await app.leader_of("gen")
                assert info is not None and (info.owner, info.token) == (term.owner, term.token)
                tokens.append(term.token)
                await asyncio.sleep(0.01)
                inside.remove(term.owner)

    async with app:
        with anyio.fail_after(30):
            await asyncio.gather(*(candidate(n) for n in range(4)))
        assert tokens == sorted(set(tokens)) and len(tokens) == 8
        assert await app.leader_of("gen") is None


async def test_try_takes_a_free_role_only(backend: Broker, clock: FakeClock) -> None:
    first, second = app_on(backend, clock), app_on(backend, clock)
    async with first, second:
        term = await first.try_leadership("gen", ttl=TTL)
        assert term is not None and term.is_held
        assert await second.try_leadership("gen", ttl=TTL) is None
        async with term:
            info = await second.leader_of("gen")
            assert info is not None and info.owner == term.owner and info.token == term.token
        after = await second.try_leadership("gen", ttl=TTL)
        assert after is not None and after.token > term.token
        async with after:
            pass


async def test_a_lapsed_role_taken_by_another_raises_and_its_fenced_writes_are_refused(
    backend: Broker, clock: FakeClock
) -> None:
    # The other candidate lives after the holder's pause: its clock is past the holder's lease.
    later = FakeClock(start=clock.time() + TTL + 1)
    paused, other = app_on(backend, clock), app_on(backend, later)
    async with paused, other:
        entered = asyncio.Event()
        terms = []

        async def lead() -> None:
            async with paused.leadership("gen", ttl=TTL) as term:
                terms.append(term)
                assert await term.fenced_set("leaders", "state", b"old")
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.get_running_loop().create_task(lead())
        await entered.wait()
        [old] = terms
        new = await other.try_leadership("gen", ttl=TTL)
        assert new is not None and new.token > old.token
        async with new:
            assert await new.fenced_set("leaders", "state", b"new")
            # The paused holder resumes: its next renewal finds the role taken.
            await clock.set(later.time())
            assert not old.is_held
            with pytest.raises(LeadershipLost) as caught:
                await task
            assert (caught.value.role, caught.value.token) == ("gen", old.token)
            assert not await old.fenced_set("leaders", "state", b"stale")
            stored = await paused.fenced_get("leaders", "state")
            assert stored is not None and (stored.token, stored.value) == (new.token, b"new")
            info = await paused.leader_of("gen")
            assert info is not None and info.owner == new.owner


async def test_the_role_is_renewed_while_held(backend: Broker, clock: FakeClock) -> None:
    app = app_on(backend, clock)
    async with app, app.leadership("gen", ttl=TTL) as term:
        for _ in range(9):  # three leases
            await anyio.wait_all_tasks_blocked()  # the renewer waits for its next beat
            await clock.advance(TTL / 3)
        info = await app.leader_of("gen")
        assert info is not None and info.owner == term.owner and term.is_held
        assert info.expires_at == pytest.approx(clock.time() + TTL)


async def test_leader_of_a_role_nobody_holds_is_none(backend: Broker) -> None:
    app = app_on(backend)
    async with app:
        assert await app.leader_of("nobody") is None
        assert await app.fenced_get("leaders", "nothing") is None
