"""Plain synchronous code: tasks sent with `add_task_sync` and awaited with `SyncResult`.

Run it with `python examples/sync_client.py`: no server and no `async def` in the caller. The
module-level app needs no ceremony: the first blocking call opens it (on a private background
loop, as no event loop owns it yet), and `app.run_in_thread` then runs a worker on an event loop
in a background thread, which takes the app over. `add.add_task_sync(...)` is typed like
`await add.add_task(...)`; `SyncTask` sends by registered name, as the seed's client does.
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
    # No worker yet: the task is stored, and waits for one (the in-memory backend keeps it).
    early = add.add_task_sync(1, 1)
    print("sent before any worker:", early.status().value)

    with app.run_in_thread(concurrency=4):
        print("add(1, 1) =", early.result(timeout=5))

        total = add.add_task_sync(2, 3)  # SyncResult[int], checked by mypy
        print("add(2, 3) =", total.result(timeout=5))

        # Send four, then wait for each: the four run at once on the four slots.
        started = time.perf_counter()
        squares = [slow_square.add_task_sync(n) for n in range(4)]
        print("slow_square(0..3) =", [handle.result(timeout=5) for handle in squares])
        print(f"  took {time.perf_counter() - started:.2f} s for 4 x 0.05 s on 4 slots")

        urgent = add.options(priority=9).add_task_sync(a=40, b=2)
        # A handle can also be rebuilt later from the task id alone.
        again: SyncResult[int] = SyncResult(urgent.task_id, app)
        print("add(a=40, b=2) =", again.result(timeout=5), "status:", again.status().value)

        by_name = SyncTask(app).add_task("add", args=(20, 22))  # by registered name
        print("add by name =", by_name.result(timeout=5))

        try:
            fail.add_task_sync("out of stock").result(timeout=5)
        except TaskFailed as exc:
            print(f"fail(...) raised remotely: {exc.error_type}: {exc.error_message}")


if __name__ == "__main__":
    main()
