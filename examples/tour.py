"""The README's tour: one task with retries, a timeout, progress, options and a remote failure."""

import anyio

from taskflow import QueueTasks, TaskContext, TaskFailed

app = QueueTasks(name="shop")  # in-memory; or broker="redis://localhost:6379/0"


@app.task(retries=3, retry_backoff=1.0, timeout=30)
async def buy(ctx: TaskContext, article: str, qty: int) -> str:
    if qty < 1:
        raise ValueError(f"qty must be >= 1, got {qty}")
    ctx.progress(qty, qty)  # visible on the result handle and the event stream
    return f"bought {qty} x {article} (attempt {ctx.attempt}, key {ctx.idempotency_key})"


async def main() -> None:
    async with app.running(concurrency=10):  # a worker inside this event loop
        handle = await buy.add_task("A-1", 2)  # typed: mypy checks the arguments
        print(await handle.result(timeout=5))
        later = await buy.options(priority=9, delay=60).add_task("B-2", 1)
        print(await later.status())  # TaskStatus.SCHEDULED
        try:
            await (await buy.options(retries=0).add_task("C-3", -1)).result(timeout=5)
        except TaskFailed as exc:  # the remote error type, message and traceback
            print("failed:", exc.error_type, exc.error_message)


if __name__ == "__main__":
    anyio.run(main)
