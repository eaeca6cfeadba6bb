"""Conformance: `Broker.watch_work`, the one way an idle worker hears of work.

Each test follows the worker's protocol: watch, claim until the queues run dry, read
`next_due` (which waits for an asynchronous subscription), then sleep until the callback.
Where a backend hands work straight to a parked worker (Redis, one queue), the worker's next
claim returns it: the tests only count what the worker can claim, not how it got there.
"""

from __future__ import annotations

import anyio

from taskflow.abc import Broker
from taskflow.testing import FakeClock

from ._helpers import claim, enqueue_one, failed, message, release, retry


class Woken:
    """A worker's callback for `watch_work`: counts its calls; `wait` waits for the next one."""

    def __init__(self) -> None:
        self.calls = 0
        self._event = anyio.Event()

    def __call__(self) -> None:
        self.calls += 1
        self._event.set()

    async def wait(self) -> None:
        with anyio.fail_after(10):
            await self._event.wait()
        self._event = anyio.Event()


async def go_idle(
    backend: Broker, clock: FakeClock, queues: tuple[str, ...] = ("default",), worker_id: str = "w1"
) -> None:
    """What a worker does before it sleeps: a claim that finds nothing, then `next_due`."""
    assert await claim(backend, clock, queues, worker_id=worker_id) == []
    await backend.next_due(list(queues), now=clock.time())


async def test_watch_work_calls_back_on_enqueue_to_a_watched_queue(
    backend: Broker, clock: FakeClock
) -> None:
    woken = Woken()
    backend.watch_work(["default"], worker_id="w1", callback=woken)
    await go_idle(backend, clock)
    await enqueue_one(backend, clock, "unrelated")
    await enqueue_one(backend, clock)
    await woken.wait()
    assert len(await claim(backend, clock, worker_id="w1")) == 1
    await backend.unwatch_work(["default"], worker_id="w1", now=clock.time())


async def test_work_sent_before_the_watch_is_seen_by_claim_or_next_due(
    backend: Broker, clock: FakeClock
) -> None:
    """Work that arrives while the watch is still subscribing is not lost: `next_due` (which
    waits for the subscription) finds it claimable, or the callback comes."""
    woken = Woken()
    backend.watch_work(["default"], worker_id="w1", callback=woken)
    await enqueue_one(backend, clock)
    due = await backend.next_due(["default"], now=clock.time())
    assert woken.calls or (due is not None and due <= clock.time())
    assert len(await claim(backend, clock, worker_id="w1")) == 1
    await backend.unwatch_work(["default"], worker_id="w1", now=clock.time())


async def test_watch_work_calls_back_on_release_and_retry(
    backend: Broker, clock: FakeClock
) -> None:
    await enqueue_one(backend, clock, retries=1)
    woken = Woken()
    backend.watch_work(["default"], worker_id="w1", callback=woken)
    [delivery] = await claim(backend, clock, worker_id="w1")
    await go_idle(backend, clock)
    await backend.complete([retry(delivery, None)], now=clock.time())
    await woken.wait()
    [again] = await claim(backend, clock, worker_id="w1")
    await go_idle(backend, clock)
    await backend.complete([release(again)], now=clock.time())
    await woken.wait()
    assert len(await claim(backend, clock, worker_id="w1")) == 1
    await backend.unwatch_work(["default"], worker_id="w1", now=clock.time())


async def test_watch_work_calls_back_on_a_retry_or_release_due_later(
    backend: Broker, clock: FakeClock
) -> None:
    # An idle worker sleeps until the earliest due time it read; a retry due sooner than that
    # must wake it to read them again, or it runs only when the worker's idle sweep comes.
    await enqueue_one(backend, clock, retries=1)
    woken = Woken()
    backend.watch_work(["default"], worker_id="w1", callback=woken)
    [delivery] = await claim(backend, clock, worker_id="w1")
    await go_idle(backend, clock)
    await backend.complete([retry(delivery, clock.time() + 0.1)], now=clock.time())
    await woken.wait()
    assert await backend.next_due(["default"], now=clock.time()) == clock.time() + 0.1
    await clock.advance(0.1)
    [again] = await claim(backend, clock, worker_id="w1")
    await go_idle(backend, clock)
    await backend.complete([release(again, clock.time() + 0.1)], now=clock.time())
    await woken.wait()
    await backend.unwatch_work(["default"], worker_id="w1", now=clock.time())


async def test_watch_work_calls_back_every_worker_watching(
    backend: Broker, clock: FakeClock
) -> None:
    woken = {worker_id: Woken() for worker_id in ("w1", "w2")}
    for worker_id, callback in woken.items():
        backend.watch_work(["a", "b"], worker_id=worker_id, callback=callback)
        await go_idle(backend, clock, ("a", "b"), worker_id)
    await backend.enqueue([message(backend, "b")], now=clock.time())
    for callback in woken.values():
        await callback.wait()
    for worker_id in woken:
        await backend.unwatch_work(["a", "b"], worker_id=worker_id, now=clock.time())


async def test_watch_work_calls_back_on_requeue_of_a_dead_letter(
    backend: Broker, clock: FakeClock
) -> None:
    task_id = await enqueue_one(backend, clock)
    [delivery] = await claim(backend, clock, worker_id="w1")
    await backend.complete([failed(delivery, clock)], now=clock.time())
    woken = Woken()
    backend.watch_work(["default"], worker_id="w1", callback=woken)
    await go_idle(backend, clock)
    await backend.requeue_dead([task_id], now=clock.time(), new_ids=["requeued-2"])
    await woken.wait()
    assert len(await claim(backend, clock, worker_id="w1")) == 1
    await backend.unwatch_work(["default"], worker_id="w1", now=clock.time())


async def test_unwatch_work_ends_the_calls(backend: Broker, clock: FakeClock) -> None:
    """After `unwatch_work` a worker is called no more, while another one still is (which
    shows the wake-up was sent); what was handed to the stopped one is given back."""
    stopped, watching = Woken(), Woken()
    backend.watch_work(["default"], worker_id="w1", callback=stopped)
    backend.watch_work(["default", "other"], worker_id="w2", callback=watching)
    await go_idle(backend, clock, ("default",), "w1")
    await go_idle(backend, clock, ("default", "other"), "w2")
    await backend.unwatch_work(["default"], worker_id="w1", now=clock.time())
    await enqueue_one(backend, clock)
    await watching.wait()
    assert stopped.calls == 0
    assert len(await claim(backend, clock, ("default", "other"), worker_id="w2")) == 1
    await backend.unwatch_work(["default", "other"], worker_id="w2", now=clock.time())
