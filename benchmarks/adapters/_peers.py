"""The six workloads for a peer queue, written once against a small `Client` each adapter fills in.

An adapter (``arq_redis.py``, ``saq_redis.py``, ...) says how to reset the server, send one task,
send a batch (if the library can), wait for one result, and start the library's own worker as a
separate OS process; `workloads` turns that into the six workloads, timed the same way for every
peer (and the same way as ``_taskflow_server.py`` times taskflow):

- A1, A2: no worker; ``send`` n times / ``send_many`` per batch.
- B: n tasks queued (batched when the library can, else one by one), untimed; the worker
  started; timed from the first result seen to the last (`_servers.drain_rate`).
- E2E, D: worker up (one warm-up task through), then n sends one by one, then every result.
- C: worker up, `_harness.steady_latencies`.

Stdlib only: it runs in each peer's own venv.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import _harness
import _servers
from _harness import Metrics, Params

RESULT_TIMEOUT_S = 300.0


class Client(Protocol):
    """What an adapter provides for one run (one fresh instance per workload)."""

    wait_limit: int
    """Result waits in flight at once: 1 for libraries that poll (in enqueue order, so the
    poller never floods the server the worker needs), more for those that push."""

    async def open(self, params: Params) -> None:
        """Connect, and empty the server's state of this library (FLUSHDB, fresh tables)."""

    async def close(self) -> None:
        """Disconnect."""

    async def send(self, name: str, args: list[Any]) -> Any:
        """Enqueue one task (``noop`` or ``nap(seconds)``), return its handle."""

    async def send_many(self, count: int) -> list[Any]:
        """Enqueue `count` ``noop`` tasks with the library's batch API, or raise NotApplicable."""

    async def wait(self, handle: Any) -> None:
        """Wait for the task's result, as the library's producer API does."""

    def worker_command(self, params: Params) -> list[str]:
        """The library's own worker CLI (or a script calling its worker API)."""


MakeClient = Callable[[], Client]


def _waiter(client: Client, handle: Any) -> Callable[[], Awaitable[None]]:
    return lambda: client.wait(handle)


async def _wait_all(client: Client, worker: _servers.WorkerProcess, handles: list[Any]) -> None:
    waits = [_waiter(client, h) for h in handles]
    await _servers.watched(
        worker, _servers.gather_bounded(waits, client.wait_limit), RESULT_TIMEOUT_S
    )


def _lost(client: Client) -> Metrics:
    """``lost_notifications`` for clients that count result pushes they never got."""
    lost = getattr(client, "lost", None)
    return {} if lost is None else {"lost_notifications": lost}


async def _opened(make_client: MakeClient, params: Params) -> Client:
    client = make_client()
    await client.open(params)
    return client


async def _enqueue_one_by_one(make_client: MakeClient, params: Params) -> Metrics:
    client = await _opened(make_client, params)
    try:
        start = time.perf_counter()
        for _ in range(params.n):
            await client.send("noop", [])
        return {"tasks_per_s": _harness.per_second(params.n, time.perf_counter() - start)}
    finally:
        await client.close()


async def _enqueue_batched(make_client: MakeClient, params: Params) -> Metrics:
    client = await _opened(make_client, params)
    try:
        start = time.perf_counter()
        for size in _harness.chunks(params.n, params.batch):
            await client.send_many(size)
        return {"tasks_per_s": _harness.per_second(params.n, time.perf_counter() - start)}
    finally:
        await client.close()


async def _queue_all(client: Client, params: Params) -> list[Any]:
    """Send `params.n` noops in batches, or one by one where batches are not applicable."""
    handles: list[Any] = []
    try:
        for size in _harness.chunks(params.n, params.batch):
            handles += await client.send_many(size)
    except _harness.NotApplicable:
        handles = [await client.send("noop", []) for _ in range(params.n - len(handles))]
    return handles


async def _process_queued(make_client: MakeClient, params: Params) -> Metrics:
    client = await _opened(make_client, params)
    try:
        handles = await _queue_all(client, params)
        async with _servers.worker_process(client.worker_command(params)) as worker:
            metrics = await _servers.drain_rate(
                worker,
                _waiter(client, handles[0]),
                [_waiter(client, h) for h in handles[1:]],
                wait_limit=client.wait_limit,
                timeout_s=RESULT_TIMEOUT_S,
            )
            return metrics | _lost(client)
    finally:
        await client.close()


#: A timed workload body, run beside a warmed-up worker process.
Body = Callable[[Client, _servers.WorkerProcess, Params], Awaitable[Metrics]]


async def _with_worker(make_client: MakeClient, body: Body, params: Params) -> Metrics:
    client = await _opened(make_client, params)
    try:
        async with _servers.worker_process(client.worker_command(params)) as worker:
            warm = await client.send("noop", [])
            await _servers.watched(worker, client.wait(warm), 120)
            return await body(client, worker, params) | _lost(client)
    finally:
        await client.close()


async def _end_to_end(client: Client, worker: _servers.WorkerProcess, params: Params) -> Metrics:
    start = time.perf_counter()
    handles = [await client.send("noop", []) for _ in range(params.n)]
    await _wait_all(client, worker, handles)
    return {"tasks_per_s": _harness.per_second(params.n, time.perf_counter() - start)}


async def _latency(client: Client, worker: _servers.WorkerProcess, params: Params) -> Metrics:
    async def send_and_wait() -> None:
        await client.wait(await client.send("noop", []))

    return await _harness.steady_latencies(params, send_and_wait)


async def _sleepers(client: Client, worker: _servers.WorkerProcess, params: Params) -> Metrics:
    start = time.perf_counter()
    handles = [await client.send("nap", [params.sleep_s]) for _ in range(params.n)]
    await _wait_all(client, worker, handles)
    return {"seconds": round(time.perf_counter() - start, 4)}


def workloads(make_client: MakeClient) -> dict[str, _harness.Workload]:
    """The six workloads for the library `make_client` speaks for."""
    return {
        "A1": functools.partial(_enqueue_one_by_one, make_client),
        "A2": functools.partial(_enqueue_batched, make_client),
        "B": functools.partial(_process_queued, make_client),
        "E2E": functools.partial(_with_worker, make_client, _end_to_end),
        "C": functools.partial(_with_worker, make_client, _latency),
        "D": functools.partial(_with_worker, make_client, _sleepers),
    }
