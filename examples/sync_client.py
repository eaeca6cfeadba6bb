"""Plain synchronous code: a worker on a background thread, tasks sent and awaited by name.

Run it with `python examples/sync_client.py`: no server and no `async def` in the caller. The
worker runs on an event loop in a background thread (`app.run_in_thread`); `SyncTask` sends a
task by its registered name and `SyncResult.result()` blocks until a worker has finished it.
"""

from __future__ import annotations

import time

from taskflow import QueueTasks, SyncResult, SyncTask, TaskFailed

app = QueueTasks(name="sync-client")


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task
def slow_square(x: int) -> int:
    # A plain function: it runs in the worker's thread pool, never on the event loop.
    time.sleep(0.05)
    return x * x


@app.task
def fail(reason: str) -> None:
    raise RuntimeError(reason)


def main() -> None:
    with app.run_in_thread(concurrency=4):
        client = SyncTask(app)

        total = client.add_task("add", args=(2, 3))
        print("add(2, 3) =", total.result(timeout=5))

        # Send four, then wait for each: the four run at once on the four slots.
        started = time.perf_counter()
        squares = [client.add_task("slow_square", args=(n,)) for n in range(4)]
        print("slow_square(0..3) =", [handle.result(timeout=5) for handle in squares])
        print(f"  took {time.perf_counter() - started:.2f} s for 4 x 0.05 s on 4 slots")

        urgent = client.add_task("add", kwargs={"a": 40, "b": 2}, priority=9)
        # A handle can also be rebuilt later from the task id alone.
        again: SyncResult[int] = SyncResult(urgent.task_id, app)
        print("add(a=40, b=2) =", again.result(timeout=5), "status:", again.status().value)

        try:
            client.add_task("fail", args=("out of stock",)).result(timeout=5)
        except TaskFailed as exc:
            print(f"fail(...) raised remotely: {exc.error_type}: {exc.error_message}")


if __name__ == "__main__":
    main()
