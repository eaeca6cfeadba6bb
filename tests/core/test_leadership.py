"""Leader election: ``app.leadership(role)`` (`Leadership`), ``app.try_leadership`` and
``app.leader_of``, on the memory backend, time under a `FakeClock`.

The lease rules themselves are the conformance suite's (tests/conformance/test_coordination.py,
and test_leadership.py there for this API on every backend); here: campaigning, renewing,
giving up on every way out, and `LeadershipLost` on a lapse and on an unreachable store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest

from taskflow import (
    GlobalConfig,
    InvalidOption,
    Leadership,
    LeadershipLost,
    LifecycleError,
    QueueTasks,
)
from taskflow.testing import FakeClock

TTL = 3.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def app(clock: FakeClock) -> AsyncIterator[QueueTasks]:
    app = QueueTasks(name="t", clock=clock, config=GlobalConfig(lease_s=30))
    async with app:
        yield app


class Candidate:
    """A task that campaigns for `term`, says when it leads, and leads until told to stop."""

    def __init__(self, term: Leadership) -> None:
        self.term = term
        self.leads = asyncio.Event()
        self.stop = asyncio.Event()
        self.body_cancelled = False
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> int:
        async with self.term as term:
            self.leads.set()
            try:
                await self.stop.wait()
            except asyncio.CancelledError:
                self.body_cancelled = True
                raise
            return term.token

    async def done(self) -> int:
        self.stop.set()
        return await self.task


async def owner_of(app: QueueTasks, role: str = "gen") -> str | None:
    info = await app.leader_of(role)
    return None if info is None else info.owner


# -- campaigning ----------------------------------------------------------------------------


async def test_a_free_role_is_taken_at_once_and_the_next_candidate_waits(
    app: QueueTasks, clock: FakeClock
) -> None:
    first = Candidate(app.leadership("gen", ttl=TTL))
    await first.leads.wait()
    assert first.term.is_held and await owner_of(app) == first.term.owner
    second = Candidate(app.leadership("gen", ttl=TTL))
    for _ in range(5):  # through more than a lease: the holder renews, the other keeps trying
        await clock.advance(TTL / 3)
    assert not second.leads.is_set() and not second.term.is_held
    first_token = await first.done()
    assert not first.term.is_held
    await clock.advance(TTL / 10)  # given up: taken at the next try, a tenth of the ttl
    await second.leads.wait()
    assert await owner_of(app) == second.term.owner
    assert await second.done() > first_token
    assert await app.leader_of("gen") is None


async def test_a_dead_holders_role_is_taken_just_after_its_lease_ends(
    app: QueueTasks, clock: FakeClock
) -> None:
    start = clock.time()
    dead = await app.coordination.acquire_lease("gen", "dead", ttl_s=TTL, now=start)
    candidate = Candidate(app.leadership("gen", ttl=TTL))
    await anyio.wait_all_tasks_blocked()
    await clock.advance(TTL - 0.01)
    assert not candidate.leads.is_set()
    await clock.advance(0.015)  # the campaign woke just after the lease's end, not a tick later
    await candidate.leads.wait()
    assert dead is not None and await candidate.done() > dead


async def test_the_role_is_renewed_while_held(app: QueueTasks, clock: FakeClock) -> None:
    holder = Candidate(app.leadership("gen", ttl=TTL))
    await holder.leads.wait()
    for _ in range(12):  # four leases
        await clock.advance(TTL / 3)
    info = await app.leader_of("gen")
    assert info is not None and info.owner == holder.term.owner
    assert info.expires_at == clock.time() + TTL
    assert holder.term.is_held
    await holder.done()


async def test_try_leadership_takes_a_free_role_or_returns_none(app: QueueTasks) -> None:
    term = await app.try_leadership("gen", ttl=TTL)
    assert term is not None and term.is_held
    assert await app.try_leadership("gen", ttl=TTL) is None
    async with term:
        assert term.is_held and (await app.leader_of("gen")) is not None
    assert await app.leader_of("gen") is None
    again = await app.try_leadership("gen", ttl=TTL)
    assert again is not None and again.token > term.token
    async with again:
        pass


async def test_the_token_grows_with_each_new_holder(app: QueueTasks) -> None:
    tokens = []
    for _ in range(3):
        async with app.leadership("gen", ttl=TTL) as term:
            tokens.append(term.token)
    assert tokens == sorted(set(tokens)) and len(tokens) == 3


# -- losing ---------------------------------------------------------------------------------


async def test_a_lapsed_role_taken_by_another_cancels_the_block_and_raises(
    app: QueueTasks, clock: FakeClock
) -> None:
    holder = Candidate(app.leadership("gen", ttl=TTL))
    await holder.leads.wait()
    # The process is paused past its lease and meanwhile another candidate takes the role.
    later = clock.time() + TTL + 1
    other = await app.coordination.acquire_lease("gen", "other", ttl_s=100, now=later)
    await clock.set(later)
    assert not holder.term.is_held  # known at once from the clock, before the renewal
    with pytest.raises(LeadershipLost) as caught:
        await holder.task
    assert holder.body_cancelled
    lost = caught.value
    assert (lost.role, lost.owner, lost.token) == ("gen", holder.term.owner, 1)
    assert other == 2 and "ttl_s=3" in lost.reason
    assert "leadership of role 'gen'" in str(lost) and "fencing token 1" in str(lost)
    assert await owner_of(app) == "other"  # the loser did not release the new holder's lease
    assert holder.task.cancelling() == 0


async def test_an_unreachable_store_past_the_lease_loses_the_role(
    app: QueueTasks, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    holder = Candidate(app.leadership("gen", ttl=TTL))
    await holder.leads.wait()
    await app.coordination.close()  # every renewal now fails
    try:
        await clock.advance(1)
        await clock.advance(1)
        assert not holder.task.done()  # failed twice, but the lease has not run out yet
        assert "renewing role 'gen' failed (retried)" in caplog.text
        await clock.advance(1)
        with pytest.raises(LeadershipLost, match="could not be renewed before its lease ran"):
            await holder.task
    finally:
        await app.coordination.open()


# -- leaving --------------------------------------------------------------------------------


async def test_the_role_is_given_up_when_the_block_raises(app: QueueTasks) -> None:
    with pytest.raises(RuntimeError):
        async with app.leadership("gen", ttl=TTL):
            raise RuntimeError("boom")
    assert await app.leader_of("gen") is None


async def test_the_role_is_given_up_when_the_holder_is_cancelled(app: QueueTasks) -> None:
    holder = Candidate(app.leadership("gen", ttl=TTL))
    await holder.leads.wait()
    holder.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder.task
    assert await app.leader_of("gen") is None and not holder.term.is_held


async def test_without_release_on_exit_the_role_lapses_like_a_crash(
    app: QueueTasks, clock: FakeClock
) -> None:
    term = app.leadership("gen", ttl=TTL)
    term.release_on_exit = False
    holder = Candidate(term)
    await holder.leads.wait()
    holder.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder.task
    assert await owner_of(app) == term.owner
    await clock.advance(TTL)
    assert await app.leader_of("gen") is None


async def test_a_candidate_cancelled_while_campaigning_leaves_no_trace(
    app: QueueTasks, clock: FakeClock
) -> None:
    await app.coordination.acquire_lease("gen", "other", ttl_s=100, now=clock.time())
    waiting = Candidate(app.leadership("gen", ttl=TTL))
    await clock.advance(1)
    waiting.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting.task
    assert await owner_of(app) == "other" and clock.sleepers == 0


# -- rules ----------------------------------------------------------------------------------


async def test_a_term_is_entered_once_and_its_token_read_only_when_held(app: QueueTasks) -> None:
    term = app.leadership("gen", ttl=TTL)
    with pytest.raises(LifecycleError, match="not held yet"):
        term.token  # noqa: B018
    async with term:
        pass
    with pytest.raises(LifecycleError, match="already entered"):
        async with term:
            pass
    assert app.leadership("gen").owner != app.leadership("gen").owner
    assert app.leadership("gen").ttl_s == 30  # the app's lease_s


@pytest.mark.parametrize("role", ["", 3, None, "a\x00b", "x" * 201])
def test_bad_roles_are_refused(role: object) -> None:
    with pytest.raises(InvalidOption, match="a role must be a non-empty str"):
        QueueTasks(name="t").leadership(role)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), "30", True])
def test_bad_ttls_are_refused(ttl: object) -> None:
    with pytest.raises(InvalidOption, match="ttl must be a number of seconds > 0"):
        QueueTasks(name="t").leadership("gen", ttl=ttl)  # type: ignore[arg-type]


async def test_leading_lists_the_roles_this_app_holds_now(
    app: QueueTasks, clock: FakeClock
) -> None:
    assert app.leading == frozenset()
    gen = Candidate(app.leadership("gen", ttl=TTL))
    beat = Candidate(app.leadership("beat", ttl=TTL))
    await gen.leads.wait()
    await beat.leads.wait()
    assert app.leading == {"gen", "beat"}
    await gen.done()
    assert app.leading == {"beat"}
    # Paused past its lease while another took the role: no longer counted.
    later = clock.time() + TTL + 1
    await app.coordination.acquire_lease("beat", "other", ttl_s=100, now=later)
    await clock.set(later)
    assert app.leading == frozenset()
    with pytest.raises(LeadershipLost):
        await beat.task
