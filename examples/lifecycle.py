"""Worker lifecycle hooks: one shared resource per worker, opened at start-up, closed at shutdown.

Run it with `python examples/lifecycle.py`. `@app.on_startup` runs once when a worker starts
(before it claims anything) and puts a resource on the worker's shared state; every task reaches
it as `ctx.state.<name>`; `@app.on_shutdown` closes it after the worker has stopped. Here the
resource is a small stand-in for a connection pool or an HTTP client.
"""

from __future__ import annotations

import anyio

from taskflow import QueueTasks, TaskContext, WorkerState

app = QueueTasks(name="lifecycle")


class PriceClient:
    """Stands in for an expensive shared client (a connection pool, an httpx.AsyncClient)."""

    def __init__(self) -> None:
        self.open = True
        self.calls = 0

    async def price(self, article: str) -> float:
        if not self.open:
            raise RuntimeError("the client is closed")
        self.calls += 1
        await anyio.sleep(0.01)
        return 9.5 if article.startswith("A") else 4.25

    async def aclose(self) -> None:
        self.open = False


@app.on_startup
async def open_client(state: WorkerState) -> None:
    state.prices = PriceClient()
    print("startup: price client opened")


@app.on_shutdown
async def close_client(state: WorkerState) -> None:
    await state.prices.aclose()
    print(f"shutdown: price client closed after {state.prices.calls} calls")


@app.task
async def quote(ctx: TaskContext, article: str, qty: int) -> float:
    client: PriceClient = ctx.state.prices  # the one client of this worker, shared by all tasks
    return qty * await client.price(article)


async def main() -> None:
    async with app.running(concurrency=4) as starter:
        handles = await app.add_tasks([quote.prepare(a, 2) for a in ("A-1", "B-2", "A-3")])
        print("quotes:", [await h.result(timeout=5) for h in handles])
        print("client shared by the worker is open:", starter.state.prices.open)
    print("worker stopped")


if __name__ == "__main__":
    anyio.run(main)
