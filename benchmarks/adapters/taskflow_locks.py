"""taskflow's declared locks (``locks=[Shared(...)]``), measured beside workload B, on one backend.

Workloads (``--workload``), each printing one JSON line as the other adapters do:

* ``B``: workload B as ``taskflow_<backend>.py`` runs it: n no-op tasks queued (batched,
  untimed), then one worker at concurrency 100 drains them; tasks/s.
* ``BL``: the same with tasks that each declare ``Shared(LOCK)``: every run takes the shared
  lock before it starts and releases it when it ends. Compared with B of the same run.
* ``LX``: the hand-over to a writer, ``--rounds`` times: three tasks holding ``Shared(LOCK)``
  run for 20 ms; a task declaring ``Exclusive(LOCK)`` is sent once they run, so it waits
  (parked, no slot held); the delay is from the end of the last holder's body to the start of
  the writer's body (wall clock, both in the worker); p50, p99 and max in ms.

Memory runs its worker in this process (as ``taskflow_memory.py`` does); Redis and PostgreSQL
start ``python -m taskflow worker _taskflow_app:app`` as a separate process (as
``taskflow_redis.py`` and ``taskflow_postgres.py`` do, with their resets: Redis database 15 is
FLUSHed, the PostgreSQL schema dropped). On memory, B is timed from the worker's start to the
last result; on a server, from the first result to the last (`_servers.drain_rate`).

    python benchmarks/adapters/taskflow_locks.py --backend redis --url redis://127.0.0.1:6391 \\
        --workload BL --n 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import _harness
import _servers
from _harness import Metrics, Params
from _taskflow_app import lock_tasks
from _taskflow_server import Producer, TaskflowServer, waiter, worker_command

from taskflow import QueueTasks

HOLDERS = 3
HOLD_S = 0.02
#: How long after sending the holders the writer is sent: they are running by then.
WRITER_AFTER_S = 0.01


def _server(backend: str) -> TaskflowServer:
    if backend == "redis":
        from taskflow_redis import flush

        return TaskflowServer(_servers.dedicated_redis_url, flush)
    from taskflow_postgres import TaskflowPostgres

    return TaskflowPostgres()


# -- memory: the worker in this process ------------------------------------------------------


def _memory_app() -> tuple[QueueTasks, Any, tuple[Any, Any, Any]]:
    app = QueueTasks(name="bench")

    @app.task
    async def noop() -> None:
        return None

    return app, noop, lock_tasks(app)


async def memory_drain(params: Params, shared: bool) -> Metrics:
    """B (or BL with `shared`) on memory: timed from the worker's start to the last result."""
    app, noop, (shared_noop, _, _) = _memory_app()
    task = shared_noop if shared else noop
    async with app:
        handles: list[Any] = []
        for size in _harness.chunks(params.n, params.batch):
            handles += await app.add_tasks([task.prepare() for _ in range(size)])
        start = time.perf_counter()
        async with app.running(concurrency=params.concurrency):
            for handle in handles:
                await handle.result(timeout=120)
            elapsed = time.perf_counter() - start
    return {"tasks_per_s": _harness.per_second(params.n, elapsed)}


async def memory_handover(params: Params, rounds: int) -> Metrics:
    """LX on memory."""
    app, _, (_, hold, swap) = _memory_app()
    async with app.running(concurrency=params.concurrency):
        return await _handover(hold, swap, rounds)


# -- Redis and PostgreSQL: the worker in its own process --------------------------------------


async def server_drain(server: TaskflowServer, params: Params, shared: bool) -> Metrics:
    """B (or BL with `shared`) on a server: timed from the first result to the last."""
    producer = await _fresh(server, params)
    shared_noop, _, _ = lock_tasks(producer.app)
    task = shared_noop if shared else producer.noop
    try:
        handles: list[Any] = []
        for size in _harness.chunks(params.n, params.batch):
            handles += await producer.app.add_tasks([task.prepare() for _ in range(size)])
        async with _servers.worker_process(worker_command(params.concurrency)) as worker:
            return await _servers.drain_rate(
                worker, waiter(handles[0]), [waiter(h) for h in handles[1:]]
            )
    finally:
        await producer.app.close()


async def server_handover(server: TaskflowServer, params: Params, rounds: int) -> Metrics:
    """LX on a server."""
    producer = await _fresh(server, params)
    _, hold, swap = lock_tasks(producer.app)
    try:
        async with _servers.worker_process(worker_command(params.concurrency)) as worker:
            await _servers.watched(worker, (await producer.noop.add_task()).result(60), 60)
            return await _servers.watched(worker, _handover(hold, swap, rounds), 600)  # type: ignore[no-any-return]
    finally:
        await producer.app.close()


async def _fresh(server: TaskflowServer, params: Params) -> Producer:
    server.url = server.resolve_url(params.url)
    await server.reset(server.url)
    producer = Producer(server.url)
    await producer.app.open()
    return producer


# -- the hand-over rounds ----------------------------------------------------------------------


async def _handover(hold: Any, swap: Any, rounds: int) -> Metrics:
    """`rounds` rounds of LX; a round whose writer started before the holders ended (it was
    claimed before they took the lock) is counted in ``writer_first`` and left out."""
    delays: list[float] = []
    writer_first = 0
    for _ in range(rounds):
        holders = [await hold.add_task(HOLD_S) for _ in range(HOLDERS)]
        await asyncio.sleep(WRITER_AFTER_S)
        writer = await swap.add_task()
        ended = [await h.result(timeout=30) for h in holders]
        started = await writer.result(timeout=30)
        if started < max(ended):
            writer_first += 1
            continue
        delays.append(started - max(ended))
    if not delays:
        return {"p50_ms": "n/a: the writer ran first in every round"}
    return {
        "p50_ms": round(_harness.percentile(delays, 0.50) * 1000, 3),
        "p99_ms": round(_harness.percentile(delays, 0.99) * 1000, 3),
        "max_ms": round(max(delays) * 1000, 3),
        "rounds": len(delays),
        "writer_first": writer_first,
    }


async def run(args: argparse.Namespace) -> Metrics:
    params = Params(
        workload=args.workload,
        n=args.n,
        concurrency=args.concurrency,
        batch=1_000,
        rate=200.0,
        duration_s=3.0,
        sleep_s=0.01,
        url=args.url,
        profile=None,
        warmup=0.0,
    )
    if args.backend == "memory":
        if args.workload == "LX":
            return await memory_handover(params, args.rounds)
        return await memory_drain(params, shared=args.workload == "BL")
    server = _server(args.backend)
    if args.workload == "LX":
        return await server_handover(server, params, args.rounds)
    return await server_drain(server, params, shared=args.workload == "BL")


def main() -> None:
    parser = argparse.ArgumentParser(description="Declared locks beside workload B.")
    parser.add_argument("--backend", required=True, choices=("memory", "redis", "postgres"))
    parser.add_argument("--workload", required=True, choices=("B", "BL", "LX"))
    parser.add_argument("--url", default=None, help="Redis URL or PostgreSQL DSN")
    parser.add_argument("--n", type=int, default=10_000, help="tasks of B and BL")
    parser.add_argument("--rounds", type=int, default=200, help="rounds of LX")
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    try:
        import uvloop

        metrics = uvloop.run(run(args))
    except ImportError:
        metrics = asyncio.run(run(args))
    print(json.dumps({"backend": args.backend, "workload": args.workload, "metrics": metrics}))


if __name__ == "__main__":
    main()
