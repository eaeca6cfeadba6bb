"""mypy must reject exactly the marked lines: misuse of typed task handles.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

from taskflow import QueueTasks, TaskContext

app = QueueTasks(name="typing")


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task
async def greet(ctx: TaskContext, name: str) -> str:
    return f"hello {name}"


@app.task
def countdown(n: int) -> Iterator[int]:
    yield from range(n, 0, -1)


async def main(ctx: TaskContext) -> None:
    await add.add_task("2", 3)  # E: arg-type
    await add.add_task(2)  # E: call-arg
    await add.add_task(2, 3, c=4)  # E: call-arg
    await add.options(priority="high").add_task(2, 3)  # E: arg-type
    await add.options(delay="5s").add_task(2, 3)  # E: arg-type
    await add.options(urgent=True).add_task(2, 3)  # E: call-arg
    add.prepare(1, "2")  # E: arg-type
    await greet.add_task(ctx, "ada")  # E: arg-type, call-arg
    text: str = await (await add.add_task(2, 3)).result()  # E: assignment
    first: int = await (await countdown.add_task(3)).result()  # E: assignment
    print(text, first)
