"""Micro benchmark of the memory backend's hot path (not collected by pytest).

100,000 tasks through enqueue (batches of 100) -> claim (100) -> complete (100, DONE) -> wait
(the result of each task), timing each phase separately and printing microseconds per task::

    .venv/bin/python tests/conformance/_bench_memory.py [n_tasks] [repeats]

Phases are timed in CPU time of this process (`time.process_time`), so other load on the
machine disturbs the numbers less; the best of `repeats` runs (default 3) is printed.
"""

from __future__ import annotations

import asyncio
import sys
import time

from taskflow.abc import Outcome, OutcomeKind, TaskMessage, encode_value
from taskflow.memory import MemoryBroker

BATCH = 100


async def run(n_tasks: int) -> dict[str, float]:
    """Push `n_tasks` through the backend; return seconds spent per phase."""
    spent = {"enqueue": 0.0, "claim": 0.0, "complete": 0.0, "wait": 0.0}
    payload = encode_value([[1, 2], {}])
    result = encode_value(3)
    now = 1_700_000_000.0
    async with MemoryBroker() as broker:
        storage = broker.storage
        for start in range(0, n_tasks, BATCH):
            messages = [
                TaskMessage(id=broker.new_task_id("q"), name="add", queue="q", payload=payload)
                for _ in range(BATCH)
            ]
            t0 = time.process_time()
            await broker.enqueue(messages, now=now)
            t1 = time.process_time()
            deliveries = await broker.claim(["q"], limit=BATCH, lease_s=30, now=now, worker_id="w")
            t2 = time.process_time()
            outcomes = [
                Outcome(
                    d.task_id, d.token, OutcomeKind.DONE, result=result, result_expires_at=now + 60
                )
                for d in deliveries
            ]
            t3 = time.process_time()
            accepted = await broker.complete(outcomes, now=now)
            t4 = time.process_time()
            for message in messages:
                await storage.wait(message.id, timeout=1.0, now=now)
            t5 = time.process_time()
            assert len(deliveries) == BATCH and all(accepted), start
            spent["enqueue"] += t1 - t0
            spent["claim"] += t2 - t1
            spent["complete"] += t4 - t3
            spent["wait"] += t5 - t4
    return spent


def main() -> None:
    n_tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    spent = asyncio.run(run(n_tasks))
    for _ in range(repeats - 1):
        again = asyncio.run(run(n_tasks))
        spent = {phase: min(seconds, again[phase]) for phase, seconds in spent.items()}
    total = 0.0
    for phase, seconds in spent.items():
        total += seconds
        print(f"{phase:>9}: {seconds / n_tasks * 1e6:6.2f} us/task")
    print(f"{'total':>9}: {total / n_tasks * 1e6:6.2f} us/task ({n_tasks / total:,.0f} tasks/s)")


if __name__ == "__main__":
    main()
