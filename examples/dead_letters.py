"""Dead letters: a task that fails for good, listed, then requeued once the cause is fixed.

Run it with `python examples/dead_letters.py`. The task fails on every attempt (2 retries, so 3
attempts), which dead-letters it: its status is `failed` and it shows up in
`app.dead_letters()`. After "fixing" the cause, `app.requeue()` creates a *new* task linked to
the old one (`requeued_from`), with fresh attempts, and that one succeeds.
"""

from __future__ import annotations

import anyio

from taskflow import QueueTasks, TaskContext, TaskFailed

app = QueueTasks(name="dead-letters")

# Stands in for an outside cause (a bad credential, a partner API down) fixed by an operator.
supplier_is_up = False


@app.task(retries=2, retry_backoff=0.01)
async def order_from_supplier(ctx: TaskContext, article: str, qty: int) -> str:
    if not supplier_is_up:
        raise ConnectionError(f"supplier unreachable (attempt {ctx.attempt})")
    return f"ordered {qty} x {article}"


async def main() -> None:
    global supplier_is_up
    async with app.running(concurrency=4):
        handle = await order_from_supplier.add_task("A-1", 3)
        try:
            await handle.result(timeout=5)
        except TaskFailed as exc:
            print(f"failed for good: {exc.error_type}: {exc.error_message}")

        dead = await app.dead_letters()
        for record in dead:
            error = record.error.message if record.error else "-"
            print(f"dead letter {record.id}: {record.name}, {record.attempts} attempts, {error}")

        supplier_is_up = True  # the operator fixed the cause
        (new_handle,) = await app.requeue([record.id for record in dead])
        assert new_handle is not None
        print("requeued as", new_handle.task_id, "->", await new_handle.result(timeout=5))

        new_record = await app.get(new_handle.task_id)
        assert new_record is not None
        print(f"new task: requeued_from={new_record.requeued_from}, attempts={new_record.attempts}")
        print("dead letters left:", len(await app.dead_letters()))


if __name__ == "__main__":
    anyio.run(main)
