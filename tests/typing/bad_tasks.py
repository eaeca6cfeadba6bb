"""mypy must reject exactly the marked lines: misuse of typed task handles.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

from taskflow import AsyncTask, QueueTasks, SyncTask, TaskContext

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


@app.task(priority="high")  # E: call-overload, untyped-decorator
async def urgent() -> None:
    pass


@app.task(delay=5)  # E: call-overload, untyped-decorator
async def later() -> None:
    pass


async def main(ctx: TaskContext) -> None:
    await add.add_task("2", 3)  # E: arg-type
    await add.add_task(2)  # E: call-arg
    await add.add_task(2, 3, c=4)  # E: call-arg
    await add.options(priority="high").add_task(2, 3)  # E: arg-type
    await add.options(delay="5s").add_task(2, 3)  # E: arg-type
    await add.options(urgent=True).add_task(2, 3)  # E: call-arg
    add.prepare(1, "2")  # E: arg-type
    await greet.add_task(ctx, "ada")  # E: arg-type, call-arg
    # Options are checked by name and type at every entry point, by one schema.
    await app.add_task("add", (1, 2), priority="high")  # E: arg-type
    await app.add_task("add", (1, 2), prority=5)  # E: call-arg
    await AsyncTask(app).add_task("add", (1, 2), headers={"n": 5})  # E: dict-item
    SyncTask(app).add_task("add", (1, 2), retries=None)  # E: arg-type
    add.options(priority=1).options(expires="soon")  # E: arg-type
    text: str = await (await add.add_task(2, 3)).result()  # E: assignment
    first: int = await (await countdown.add_task(3)).result()  # E: assignment
    print(text, first)
