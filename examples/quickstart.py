"""Quickstart: tasks, results, retries, progress and a generator, on the embedded backend.

Run it with `python examples/quickstart.py`: no server needed, it prints results computed by a
worker running inside this script's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from taskflow import QueueTasks, TaskContext, TaskFailed

app = QueueTasks(name="quickstart")


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task(retries=2, retry_backoff=0.01)
async def flaky(ctx: TaskContext, succeed_on: int) -> str:
    if ctx.attempt < succeed_on:
        raise ConnectionError(f"attempt {ctx.attempt}: the network blinked")
    return f"succeeded on attempt {ctx.attempt}"


@app.task
def word_count(text: str) -> int:
    # A plain function runs in a bounded thread pool, never on the event loop.
    return len(text.split())


@app.task
async def countdown(ctx: TaskContext, n: int) -> AsyncIterator[int]:
    for i in range(n, 0, -1):
        ctx.progress(n - i + 1, n)
        yield i


@app.task
async def divide(a: float, b: float) -> float:
    return a / b


async def main() -> None:
    async with app.running(concurrency=10):
        total = await add.add_task(2, 3)
        print("add(2, 3) =", await total.result(timeout=5))

        batch = await app.add_tasks([add.prepare(i, i) for i in range(5)])
        print("batch of add(i, i):", [await h.result(timeout=5) for h in batch])

        print("flaky:", await (await flaky.add_task(3)).result(timeout=5))
        print("word_count:", await (await word_count.add_task("to be or not to be")).result(5))
        print("countdown yields:", await (await countdown.add_task(3)).result(timeout=5))

        urgent = await add.options(priority=9).add_task(40, 2)
        print("priority 9 add(40, 2) =", await urgent.result(timeout=5))

        try:
            await (await divide.add_task(1, 0)).result(timeout=5)
        except TaskFailed as exc:
            print(f"divide(1, 0) failed remotely: {exc.error_type}: {exc.error_message}")


if __name__ == "__main__":
    anyio.run(main)
