"""mypy must accept this: the blocking twin of `add_task` is typed like it.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import assert_type

from taskflow import QueueTasks, SyncResult, TaskContext

app = QueueTasks(name="typing")


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task
async def greet(ctx: TaskContext, name: str, *, excited: bool = False) -> str:
    return f"hello {name}" + ("!" if excited else "")


@app.task
def countdown(n: int) -> Iterator[int]:
    yield from range(n, 0, -1)


def main() -> None:
    handle = add.add_task_sync(2, 3)
    assert_type(handle, SyncResult[int])
    total: int = handle.result(timeout=5)

    urgent = add.options(priority=5).add_task_sync(1, b=2)
    assert_type(urgent, SyncResult[int])

    hello: str = greet.add_task_sync("ada", excited=True).result()
    assert_type(countdown.add_task_sync(3).result(), list[int])
    print(total, hello)
