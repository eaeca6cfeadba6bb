"""mypy must reject exactly the marked lines: misuse of the blocking `add_task_sync`.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from taskflow import QueueTasks, TaskContext

app = QueueTasks(name="typing")


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task
async def greet(ctx: TaskContext, name: str) -> str:
    return f"hello {name}"


def main(ctx: TaskContext) -> None:
    add.add_task_sync("2", 3)  # E: arg-type
    add.add_task_sync(2)  # E: call-arg
    add.options(priority=5).add_task_sync(2, 3, c=4)  # E: call-arg
    greet.add_task_sync(ctx, "ada")  # E: arg-type, call-arg
    text: str = add.add_task_sync(2, 3).result()  # E: assignment
    print(text)
