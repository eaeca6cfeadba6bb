"""Conformance of the worker registry (`Coordination.register_workers`, `list_workers`,
`unregister_workers`) and the error log (`Storage.errors`, written by `Broker.complete`)."""

from __future__ import annotations

from taskflow.abc import Broker, ErrorInfo, FailedAttempt, Outcome, OutcomeKind, WorkerInfo
from taskflow.testing import FakeClock

from ._helpers import claim, done, enqueue_one, failed


def _worker(worker_id: str, **fields: object) -> WorkerInfo:
    base: dict[str, object] = {
        "host": "h1",
        "pid": 100,
        "queues": ("default",),
        "concurrency": 4,
        "started_at": 1.0,
    }
    base.update(fields)
    return WorkerInfo(id=worker_id, **base)  # type: ignore[arg-type]


# -- the worker registry ----------------------------------------------------------------------


async def test_registered_workers_are_listed_sorted_and_stamped(
    backend: Broker, clock: FakeClock
) -> None:
    coordination = backend.coordination
    assert await coordination.list_workers(now=clock.time()) == []
    now = clock.time()
    await coordination.register_workers(
        [_worker("w2", roles=("generator",), processed=3, failed=1, running=2), _worker("w1")],
        ttl_s=10.0,
        now=now,
    )
    listed = await coordination.list_workers(now=now)
    assert [w.id for w in listed] == ["w1", "w2"]
    w2 = listed[1]
    assert (w2.host, w2.pid, w2.queues, w2.concurrency) == ("h1", 100, ("default",), 4)
    assert (w2.roles, w2.processed, w2.failed, w2.running) == (("generator",), 3, 1, 2)
    assert (w2.started_at, w2.heartbeat_at, w2.expires_at) == (1.0, now, now + 10.0)


async def test_a_heartbeat_replaces_the_entry_and_extends_it(
    backend: Broker, clock: FakeClock
) -> None:
    coordination = backend.coordination
    await coordination.register_workers([_worker("w1")], ttl_s=10.0, now=clock.time())
    await clock.advance(8.0)
    await coordination.register_workers([_worker("w1", processed=5)], ttl_s=10.0, now=clock.time())
    await clock.advance(8.0)  # 16 s after the first write, 8 after the second
    [entry] = await coordination.list_workers(now=clock.time())
    assert entry.processed == 5
    assert entry.expires_at == clock.time() + 2.0


async def test_a_lapsed_entry_is_gone_for_readers_and_deleted(
    backend: Broker, clock: FakeClock
) -> None:
    coordination = backend.coordination
    start = clock.time()
    await coordination.register_workers([_worker("dead")], ttl_s=5.0, now=start)
    await coordination.register_workers([_worker("alive")], ttl_s=50.0, now=start)
    await clock.advance(5.0)  # exactly at its expiry: lapsed
    assert [w.id for w in await coordination.list_workers(now=clock.time())] == ["alive"]
    # Deleted, not only hidden: a reader with an earlier clock no longer sees it either.
    assert [w.id for w in await coordination.list_workers(now=start)] == ["alive"]


async def test_a_write_deletes_lapsed_entries_too(backend: Broker, clock: FakeClock) -> None:
    coordination = backend.coordination
    start = clock.time()
    await coordination.register_workers([_worker("dead")], ttl_s=5.0, now=start)
    await clock.advance(6.0)
    await coordination.register_workers([_worker("new")], ttl_s=5.0, now=clock.time())
    assert [w.id for w in await coordination.list_workers(now=start)] == ["new"]


async def test_unregister_removes_at_once(backend: Broker, clock: FakeClock) -> None:
    coordination = backend.coordination
    now = clock.time()
    await coordination.register_workers([_worker("w1"), _worker("w2")], ttl_s=60.0, now=now)
    await coordination.unregister_workers(["w1", "unknown"])
    assert [w.id for w in await coordination.list_workers(now=now)] == ["w2"]
    await coordination.unregister_workers([])
    await coordination.register_workers([], ttl_s=60.0, now=now)
    assert [w.id for w in await coordination.list_workers(now=now)] == ["w2"]


# -- the error log ------------------------------------------------------------------------------


async def test_every_failed_attempt_is_logged_even_if_a_retry_succeeds(
    backend: Broker, clock: FakeClock
) -> None:
    storage = backend.storage
    task_id = await enqueue_one(backend, clock, retries=2, name="tests.flaky")
    [first] = await claim(backend, clock, worker_id="worker-a")
    error = ErrorInfo("ValueError", "first", 'Traceback\n  File "t.py", line 3, in f\nValueError')
    retried = Outcome(first.task_id, first.token, OutcomeKind.RETRY, error=error)
    assert await backend.complete([retried], now=clock.time()) == [True]
    await clock.advance(1.0)
    [second] = await claim(backend, clock, worker_id="worker-b")
    assert await backend.complete([done(second, clock)], now=clock.time()) == [True]

    [entry] = await storage.errors()
    assert entry == FailedAttempt(
        at=clock.time() - 1.0,
        task_id=task_id,
        name="tests.flaky",
        queue="default",
        attempt=1,
        worker_id="worker-a",
        error=error,
        retried=True,
    )
    assert entry.last_frame == 'File "t.py", line 3, in f'


async def test_errors_newest_first_filtered_and_limited(backend: Broker, clock: FakeClock) -> None:
    storage = backend.storage
    ids = []
    for name, queue in [("tests.a", "default"), ("tests.b", "other"), ("tests.a", "other")]:
        ids.append(await enqueue_one(backend, clock, queue, name=name))
        [delivery] = await claim(backend, clock, (queue,))
        assert await backend.complete([failed(delivery, clock)], now=clock.time()) == [True]
        await clock.advance(10.0)
    newest_first = list(reversed(ids))
    assert [e.task_id for e in await storage.errors()] == newest_first
    assert all(not e.retried and e.error.type == "ValueError" for e in await storage.errors())
    assert [e.task_id for e in await storage.errors(limit=2)] == newest_first[:2]
    assert [e.task_id for e in await storage.errors(name="tests.a")] == [ids[2], ids[0]]
    assert [e.task_id for e in await storage.errors(queues=["other"])] == [ids[2], ids[1]]
    since = clock.time() - 20.0  # the last two were logged at -20 and -10
    assert [e.task_id for e in await storage.errors(since=since)] == [ids[2], ids[1]]


async def test_refused_and_errorless_outcomes_are_not_logged(
    backend: Broker, clock: FakeClock
) -> None:
    await enqueue_one(backend, clock, retries=1)
    [delivery] = await claim(backend, clock)
    stale = Outcome(
        delivery.task_id, delivery.token + 1, OutcomeKind.FAILED, error=ErrorInfo("X", "stale")
    )
    assert await backend.complete([stale], now=clock.time()) == [False]
    errorless = Outcome(delivery.task_id, delivery.token, OutcomeKind.RETRY)
    assert await backend.complete([errorless], now=clock.time()) == [True]
    assert await backend.storage.errors() == []


async def test_the_error_log_is_capped(backend: Broker, clock: FakeClock) -> None:
    storage = backend.storage
    storage.errors_maxlen = 5
    for _ in range(40):
        await enqueue_one(backend, clock, queue="capped")
    deliveries = await claim(backend, clock, ("capped",))
    await backend.complete([failed(d, clock) for d in deliveries], now=clock.time())
    if hasattr(storage, "trim_events"):  # PostgreSQL trims now and then; make it trim now
        await storage.trim_events()
    kept = await storage.errors(limit=1000)
    # Approximate, as the event stream's cap: never all, never fewer than the cap.
    assert 5 <= len(kept) < 40
