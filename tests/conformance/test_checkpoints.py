"""Checkpoints (`Storage.save_checkpoints`, `Storage.checkpoints`): named values a running task
records, fenced by its token, that outlive its claim and go with its record."""

from __future__ import annotations

from taskflow.abc import Broker, Checkpoint
from taskflow.testing import FakeClock

from ._helpers import claim, done, enqueue_one, failed, release, retry


async def test_a_checkpoint_is_read_back_and_a_name_saved_again_is_replaced(
    backend: Broker, clock: FakeClock
) -> None:
    storage = backend.storage
    task_id = await enqueue_one(backend, clock)
    [d] = await claim(backend, clock)
    assert await storage.checkpoints(task_id) == {}
    saved = [
        Checkpoint(task_id, d.token, "chunks:rows", b"\x01"),
        Checkpoint(task_id, d.token, "step:a", b""),
    ]
    assert await storage.save_checkpoints(saved, now=clock.time()) == [True, True]
    assert await storage.checkpoints(task_id) == {"chunks:rows": b"\x01", "step:a": b""}
    again = Checkpoint(task_id, d.token, "chunks:rows", b"\x00\xff" * 100)
    assert await storage.save_checkpoints([again], now=clock.time()) == [True]
    assert await storage.checkpoints(task_id) == {"chunks:rows": b"\x00\xff" * 100, "step:a": b""}
    assert await storage.save_checkpoints([], now=clock.time()) == []
    assert await storage.checkpoints("no-such-task") == {}


async def test_a_batch_is_applied_in_order_and_answered_in_order(
    backend: Broker, clock: FakeClock
) -> None:
    storage = backend.storage
    first = await enqueue_one(backend, clock)
    second = await enqueue_one(backend, clock, "other")
    [d1] = await claim(backend, clock)
    [d2] = await claim(backend, clock, ("other",))
    batch = [
        Checkpoint(first, d1.token, "n", b"1"),
        Checkpoint(second, d2.token + 1, "n", b"stale"),
        Checkpoint(second, d2.token, "n", b"a"),
        Checkpoint(first, d1.token, "n", b"2"),
        Checkpoint("unknown", 1, "n", b"x"),
        Checkpoint(first, d1.token, "n", b"3"),
    ]
    assert await storage.save_checkpoints(batch, now=clock.time()) == [
        True,
        False,
        True,
        True,
        False,
        True,
    ]
    assert await storage.checkpoints(first) == {"n": b"3"}
    assert await storage.checkpoints(second) == {"n": b"a"}


async def test_writes_are_fenced_by_the_current_token_of_a_running_task(
    backend: Broker, clock: FakeClock
) -> None:
    storage = backend.storage
    task_id = await enqueue_one(backend, clock, retries=3)
    queued = Checkpoint(task_id, 1, "n", b"early")
    assert await storage.save_checkpoints([queued], now=clock.time()) == [False]
    [old] = await claim(backend, clock, lease_s=10)
    assert await storage.save_checkpoints(
        [Checkpoint(task_id, old.token, "n", b"1")], now=clock.time()
    ) == [True]
    await clock.advance(11)
    [new] = await claim(backend, clock)
    assert new.token > old.token
    zombie = Checkpoint(task_id, old.token, "n", b"zombie")
    assert await storage.save_checkpoints([zombie], now=clock.time()) == [False]
    assert await storage.checkpoints(task_id) == {"n": b"1"}
    await backend.complete([done(new, clock)], now=clock.time())
    late = Checkpoint(task_id, new.token, "n", b"late")
    assert await storage.save_checkpoints([late], now=clock.time()) == [False]
    assert await storage.checkpoints(task_id) == {"n": b"1"}


async def test_checkpoints_survive_a_reclaim_a_retry_and_a_release(
    backend: Broker, clock: FakeClock
) -> None:
    storage = backend.storage
    task_id = await enqueue_one(backend, clock, retries=3)
    [d] = await claim(backend, clock, lease_s=10)
    await storage.save_checkpoints([Checkpoint(task_id, d.token, "a", b"1")], now=clock.time())
    await clock.advance(11)  # the worker died: its lease lapses and the task is claimed again
    [d] = await claim(backend, clock)
    assert await storage.checkpoints(task_id) == {"a": b"1"}
    await storage.save_checkpoints([Checkpoint(task_id, d.token, "b", b"2")], now=clock.time())
    await backend.complete([retry(d, clock.time())], now=clock.time())
    assert await storage.checkpoints(task_id) == {"a": b"1", "b": b"2"}
    [d] = await claim(backend, clock)
    await storage.save_checkpoints([Checkpoint(task_id, d.token, "c", b"3")], now=clock.time())
    await backend.complete([release(d)], now=clock.time())
    [d] = await claim(backend, clock)
    assert await storage.checkpoints(task_id) == {"a": b"1", "b": b"2", "c": b"3"}
    await backend.complete([failed(d, clock)], now=clock.time())
    assert await storage.checkpoints(task_id) == {"a": b"1", "b": b"2", "c": b"3"}


async def test_checkpoints_go_with_the_tasks_record(backend: Broker, clock: FakeClock) -> None:
    storage = backend.storage
    task_id = await enqueue_one(backend, clock)
    kept = await enqueue_one(backend, clock)
    deliveries = {d.task_id: d for d in await claim(backend, clock)}
    entries = [Checkpoint(t, deliveries[t].token, "n", b"1") for t in (task_id, kept)]
    assert await storage.save_checkpoints(entries, now=clock.time()) == [True, True]
    await backend.complete([done(deliveries[task_id], clock)], now=clock.time())
    await clock.advance(3600 + 61)  # past the result TTL and the cleanup's keep
    assert await storage.cleanup(now=clock.time(), keep_s=60) == 1
    assert await storage.get(task_id, now=clock.time()) is None
    assert await storage.checkpoints(task_id) == {}
    assert await storage.checkpoints(kept) == {"n": b"1"}
