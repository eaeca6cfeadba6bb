"""Flows on Redis: the outbox that carries a parent's end to children in other queues.

A script ending a task cannot touch a child in another queue's hash slot; it records the
delivery in its own queue's outbox in the same call, and the broker delivers it right after.
Here the delivery is left out (as if the process died between the call and it): the child
stays waiting, the entry stays in the outbox, and housekeeping (`Storage.cleanup`) delivers it;
a delivery made twice counts once. The contract itself is tested in tests/conformance.

Each test runs on a single node and on the session's 3-master Redis Cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from taskflow.abc import TaskStatus
from taskflow.redis import RedisBroker
from taskflow.redis._codec import complete_args, split_outbox
from taskflow.redis._outbox import deliver_outboxes
from taskflow.testing import FakeClock
from tests.conformance._helpers import TTL_S, claim, done, message

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


async def _parent_and_child(broker: RedisBroker, clock: FakeClock) -> tuple[str, str]:
    """A parent in ``default`` and its child, waiting for it, in ``other``."""
    child_id = broker.new_task_id("other")
    parent = message(broker, flow_id="f", node="p", children=[(child_id, "other")])
    child = message(broker, "other", id=child_id, flow_id="f", node="c", waits_for=[parent.id])
    await broker.enqueue([parent, child], now=clock.time())
    return parent.id, child_id


async def _status(broker: RedisBroker, task_id: str, clock: FakeClock) -> TaskStatus:
    [record] = await broker.storage.get_many([task_id], now=clock.time())
    assert record is not None
    return record.status


async def test_an_end_left_in_the_outbox_is_delivered_by_housekeeping(
    broker: RedisBroker, clock: FakeClock
) -> None:
    rs = broker.storage
    parent, child = await _parent_and_child(broker, clock)
    [delivery] = await claim(broker, clock)
    # The complete script alone: the delivery that follows it in the broker never happens.
    args = complete_args([done(delivery, clock)], rs.errors_maxlen)
    reply, outbox = split_outbox(
        await rs.run_queue_script("complete", "default", clock.time(), args)
    )
    assert (reply, outbox) == ([1], True)
    assert await _status(broker, parent, clock) is TaskStatus.DONE
    assert await _status(broker, child, clock) is TaskStatus.WAITING
    assert await rs.client.zcard(rs.qkey("default", "outbox")) == 1

    await rs.cleanup(now=clock.time(), keep_s=TTL_S)

    assert await _status(broker, child, clock) is TaskStatus.QUEUED
    assert await rs.client.zcard(rs.qkey("default", "outbox")) == 0
    assert [d.task_id for d in await claim(broker, clock, ("other",))] == [child]


async def test_a_delivery_made_twice_counts_once(broker: RedisBroker, clock: FakeClock) -> None:
    rs = broker.storage
    child_id = broker.new_task_id("other")
    parents = [message(broker, children=[(child_id, "other")]) for _ in range(2)]
    child = message(broker, "other", id=child_id, waits_for=[p.id for p in parents])
    await broker.enqueue([*parents, child], now=clock.time())
    first, second = await claim(broker, clock)
    args = complete_args([done(first, clock)], rs.errors_maxlen)
    await rs.run_queue_script("complete", "default", clock.time(), args)
    entries = await rs.client.zrange(rs.qkey("default", "outbox"), 0, -1)

    await deliver_outboxes(rs, ["default"], clock.time(), clock.time() + TTL_S)
    await rs.client.zadd(rs.qkey("default", "outbox"), {entries[0]: 1})  # delivered again
    await deliver_outboxes(rs, ["default"], clock.time(), clock.time() + TTL_S)

    assert await _status(broker, child_id, clock) is TaskStatus.WAITING  # one of two arrived
    assert await broker.complete([done(second, clock)], now=clock.time()) == [True]
    assert await _status(broker, child_id, clock) is TaskStatus.QUEUED


async def test_cleanup_leaves_no_flow_keys_behind(broker: RedisBroker, clock: FakeClock) -> None:
    """A flow's index in a queue and the queue's entry in the flow's queue set go with the last
    of its records there."""
    rs = broker.storage
    parent, child = await _parent_and_child(broker, clock)
    [delivery] = await claim(broker, clock)
    await broker.complete([done(delivery, clock)], now=clock.time())
    [delivery] = await claim(broker, clock, ("other",))
    await broker.complete([done(delivery, clock)], now=clock.time())
    assert await rs.client.smembers(rs.flow_queues_key("f")) == {b"default", b"other"}

    await clock.advance(TTL_S + 1)
    assert await rs.cleanup(now=clock.time(), keep_s=0.0) == 2

    assert await rs.flow_tasks("f", now=clock.time()) == []
    assert await rs.client.exists(rs.flow_queues_key("f")) == 0
    for queue in ("default", "other"):
        assert await rs.client.exists(rs.qkey(queue, "fl:f")) == 0
    keys = [rs.qkey("other", f"ar:{child}"), rs.qkey("default", f"ar:{parent}")]
    assert await rs.client.exists(*keys) == 0
