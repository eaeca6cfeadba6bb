"""Bad data on the server: a stored task the scripts or the client cannot read.

A queued task's stored form overwritten with garbage, truncated, replaced by a msgpack integer,
by a key of another type, by an array short of fields, or gone while the task is still listed
(issue 14, D1): the script that meets it fails that task alone, as ``UndecodableMessage``, and
goes on with the others (Redis keeps what a script wrote before an error, so a script that
stopped half-way used to strand the tasks it had claimed with it). A record whose message does
not decode (D5) is shown marked ``undecodable`` instead of hiding every record read with it.

Each test runs on a single node and on the session's 3-master Redis Cluster.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import msgpack  # type: ignore[import-untyped]
import pytest

from taskflow import GlobalConfig, QueueTasks, TaskInfo
from taskflow.abc import (
    CancelResult,
    ErrorInfo,
    Lease,
    LeaseState,
    TaskOutcome,
    TaskRecord,
    TaskStatus,
)
from taskflow.redis import RedisBroker
from taskflow.redis._codec import pack, unpack
from taskflow.testing import FakeClock
from tests.conformance._helpers import LEASE_S, claim, done, enqueue_one, failed

pytestmark = pytest.mark.redis

KINDS = ("redis", "redis_cluster")


@pytest.fixture(params=KINDS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[RedisBroker]:
    """An open broker on the shared single node or on the test cluster, under its own prefix."""
    factory = request.getfixturevalue(f"backend_factory_{request.param}")
    async with factory() as opened:
        assert isinstance(opened, RedisBroker)
        yield opened


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _qkey(broker: RedisBroker, task_id: str) -> str:
    return broker.storage.qkey("default", f"q:{task_id}")


async def _stored(broker: RedisBroker, task_id: str) -> bytes:
    stored: bytes = await broker.storage.client.get(_qkey(broker, task_id))
    return stored


async def _overwrite(broker: RedisBroker, task_id: str, value: bytes) -> None:
    await broker.storage.client.set(_qkey(broker, task_id), value)


async def _garbage(broker: RedisBroker, task_id: str) -> None:
    """The issue's corruption: the first 12 bytes (its sequence), then bytes msgpack refuses."""
    await _overwrite(broker, task_id, (await _stored(broker, task_id))[:12] + b"\xc1 not msgpack")


async def _truncated(broker: RedisBroker, task_id: str) -> None:
    stored = await _stored(broker, task_id)
    await _overwrite(broker, task_id, stored[: len(stored) // 2])


async def _integer(broker: RedisBroker, task_id: str) -> None:
    await _overwrite(broker, task_id, (await _stored(broker, task_id))[:12] + msgpack.packb(7))


async def _short_array(broker: RedisBroker, task_id: str) -> None:
    stored = await _stored(broker, task_id)
    await _overwrite(broker, task_id, stored[:12] + pack(unpack(stored[12:])[:3]))


async def _wrong_type(broker: RedisBroker, task_id: str) -> None:
    client, key = broker.storage.client, _qkey(broker, task_id)
    await client.delete(key)
    await client.rpush(key, b"not a string")


async def _missing(broker: RedisBroker, task_id: str) -> None:
    await broker.storage.client.delete(_qkey(broker, task_id))


Corruption = Callable[[RedisBroker, str], Awaitable[None]]

CORRUPTIONS: dict[str, Corruption] = {
    "garbage": _garbage,
    "truncated": _truncated,
    "integer": _integer,
    "short_array": _short_array,
    "wrong_type": _wrong_type,
    "missing": _missing,
}


def _assert_failed_as_unreadable(record: TaskRecord | TaskInfo | None) -> None:
    assert record is not None
    assert record.status is TaskStatus.FAILED
    assert record.error is not None and record.error.type == "UndecodableMessage"
    assert "cannot be read" in record.error.message
    assert record.undecodable
    assert record.attempts == 0


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
async def test_one_unreadable_queued_task_fails_alone_and_the_others_are_claimed(
    broker: RedisBroker, clock: FakeClock, corruption: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case: 10 tasks, the 5th corrupted, one claim of 10. The 9 others are
    delivered, running under a lease (renewable); the bad one is failed as UndecodableMessage,
    in the dead letters, and nothing is left queued."""
    ids = [await enqueue_one(broker, clock) for _ in range(10)]
    bad = ids[4]
    await CORRUPTIONS[corruption](broker, bad)
    with caplog.at_level(logging.ERROR, "taskflow.redis"):
        deliveries = await claim(broker, clock, limit=10)
    assert [d.task_id for d in deliveries] == [i for i in ids if i != bad]
    assert bad in caplog.text
    leases = [Lease(d.task_id, d.token) for d in deliveries]
    assert await broker.extend(leases, lease_s=LEASE_S, now=clock.time()) == [LeaseState.OK] * 9
    _assert_failed_as_unreadable(await broker.storage.get(bad, now=clock.time()))
    [dead] = await broker.dead_letters("default")
    assert dead.id == bad and dead.undecodable
    stats = (await broker.stats(["default"], now=clock.time()))[0]
    assert (stats.queued, stats.running, stats.dead) == (0, 9, 1)
    assert await claim(broker, clock) == []
    assert (
        await broker.complete([done(d, clock) for d in deliveries], now=clock.time()) == [True] * 9
    )


async def test_an_unreadable_scheduled_task_fails_when_it_becomes_due(
    broker: RedisBroker, clock: FakeClock
) -> None:
    ids = [await enqueue_one(broker, clock, eta=clock.time() + 10) for _ in range(3)]
    await _garbage(broker, ids[1])
    await clock.advance(11)
    deliveries = await claim(broker, clock)
    assert [d.task_id for d in deliveries] == [ids[0], ids[2]]
    _assert_failed_as_unreadable(await broker.storage.get(ids[1], now=clock.time()))


@pytest.mark.parametrize("corruption", ["garbage", "wrong_type"])
async def test_an_unreadable_queued_task_reads_as_undecodable_until_a_claim_fails_it(
    broker: RedisBroker, clock: FakeClock, corruption: str
) -> None:
    """Reading it (info(), a result waiter) is no error: queued, marked undecodable."""
    good, bad = await enqueue_one(broker, clock), await enqueue_one(broker, clock)
    await CORRUPTIONS[corruption](broker, bad)
    records = await broker.storage.get_many([good, bad], now=clock.time())
    assert [r.status if r else None for r in records] == [TaskStatus.QUEUED] * 2
    assert [r.undecodable if r else None for r in records] == [False, True]
    [outcome] = await broker.storage._get_outcomes([bad], clock.time())
    assert outcome is not None and outcome.status is TaskStatus.QUEUED


@pytest.mark.parametrize("corruption", ["garbage", "wrong_type"])
async def test_a_result_waiter_of_an_unreadable_task_is_told_it_failed(
    broker: RedisBroker, clock: FakeClock, corruption: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter that read the task before a claim failed it is pushed the failure."""
    bad = await enqueue_one(broker, clock)
    await CORRUPTIONS[corruption](broker, bad)
    storage = broker.storage
    registered, read_now = anyio.Event(), storage._read_now

    async def read_and_tell(reads: Any, *, outcome: bool) -> Any:
        raws = await read_now(reads, outcome=outcome)
        registered.set()
        return raws

    monkeypatch.setattr(storage, "_read_now", read_and_tell)
    outcomes: list[TaskOutcome] = []

    async def wait() -> None:
        outcomes.append(await storage.wait(bad, timeout=None, now=clock.time()))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await registered.wait()
            assert await claim(broker, clock) == []
    [outcome] = outcomes
    assert outcome.status is TaskStatus.FAILED
    assert outcome.error is not None and outcome.error.type == "UndecodableMessage"


@pytest.mark.parametrize("corruption", ["garbage", "wrong_type"])
async def test_cancel_and_purge_fail_an_unreadable_task_and_end_the_others(
    broker: RedisBroker, clock: FakeClock, corruption: str
) -> None:
    cancelled, bad_cancelled = await enqueue_one(broker, clock), await enqueue_one(broker, clock)
    await CORRUPTIONS[corruption](broker, bad_cancelled)
    assert await broker.cancel([cancelled, bad_cancelled], now=clock.time()) == [
        CancelResult.CANCELLED,
        CancelResult.ALREADY_TERMINAL,
    ]
    _assert_failed_as_unreadable(await broker.storage.get(bad_cancelled, now=clock.time()))
    purged = [await enqueue_one(broker, clock) for _ in range(3)]
    await CORRUPTIONS[corruption](broker, purged[1])
    assert await broker.purge("default", now=clock.time()) == 2
    _assert_failed_as_unreadable(await broker.storage.get(purged[1], now=clock.time()))
    assert await claim(broker, clock) == []


async def test_a_dead_letter_whose_message_does_not_decode_is_shown_not_raised(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """D5: a dead letter whose stored message is corrupt is listed, marked undecodable, with
    what its record holds (status, attempts, error, name); the others are listed as usual,
    and requeueing skips it."""
    ids = [await enqueue_one(broker, clock) for _ in range(3)]
    deliveries = await claim(broker, clock)
    assert (
        await broker.complete([failed(d, clock) for d in deliveries], now=clock.time())
        == [True] * 3
    )
    bad = ids[1]
    await broker.storage.client.hset(
        broker.storage.qkey("default", f"t:{bad}"), "msg", b"\xc1 not msgpack"
    )
    record = await broker.storage.get(bad, now=clock.time())
    assert record is not None and record.undecodable
    assert (record.id, record.queue, record.status, record.attempts) == (
        bad,
        "default",
        TaskStatus.FAILED,
        1,
    )
    assert record.error == ErrorInfo("ValueError", "boom", "Traceback ...")
    assert record.name == "tests.task"
    listed = await broker.dead_letters("default")
    assert sorted(r.id for r in listed) == sorted(ids)
    assert [r.id for r in listed if r.undecodable] == [bad]
    fresh = [broker.new_task_id("default") for _ in ids]
    new_ids = await broker.requeue_dead(ids, now=clock.time(), new_ids=fresh)
    assert [n is None for n in new_ids] == [False, True, False]


async def test_a_worker_runs_the_good_tasks_claimed_with_an_unreadable_one(
    broker: RedisBroker, clock: FakeClock
) -> None:
    """End to end, the issue's reproduction: a worker at concurrency 10 runs the 9 good tasks;
    the bad one ends failed, its handle's info() and the app's dead letters show it."""
    app = QueueTasks("badData", broker=broker, clock=clock, config=GlobalConfig(idle_poll_s=1000))

    @app.task(name="double")
    async def double(x: int) -> int:
        return 2 * x

    async with app:
        handles = [await double.add_task(i) for i in range(10)]
        await _garbage(broker, handles[4].task_id)
        with anyio.fail_after(30):
            async with app.running(concurrency=10):
                results = [await h.result(timeout=20) for h in handles if h is not handles[4]]
                # Failed by the claim that took the tasks after it, before they ran.
                info = await handles[4].info()
        assert results == [2 * i for i in range(10) if i != 4]
        _assert_failed_as_unreadable(info)
        [dead] = await app.dead_letters()
        assert dead.id == handles[4].task_id and dead.undecodable
