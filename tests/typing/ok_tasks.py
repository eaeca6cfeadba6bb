"""mypy must accept this: typed task handles carry the function's parameters and return type.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, assert_type

from typing_extensions import Unpack

from taskflow import (
    AsyncResult,
    AsyncTask,
    CallOptions,
    PreparedTask,
    QueueTasks,
    SyncResult,
    SyncTask,
    TaskCall,
    TaskContext,
    TaskFunc,
)

app = QueueTasks(name="typing")


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task(retries=3, priority=5, queue="fast")
async def greet(ctx: TaskContext, name: str, *, excited: bool = False) -> str:
    return f"hello {name} from {ctx.task_id}" + ("!" if excited else "")


@app.task
def word_count(text: str) -> int:
    return len(text.split())


@app.task
def countdown(n: int) -> Iterator[int]:
    yield from range(n, 0, -1)


@app.task
async def stream(ctx: TaskContext, n: int) -> AsyncIterator[str]:
    for i in range(n):
        yield str(i)


@app.task
async def wait_for(timeout: float) -> float:
    return timeout


@app.task(expires=timedelta(hours=1), timeout=None, retry_backoff=2, store_result=False)
async def ping() -> None:
    pass


@app.task(name="nightly", expires=datetime(2030, 1, 1, tzinfo=UTC), retry_on=ValueError)
async def nightly() -> None:
    pass


# One schema: a wrapper can take the very options every entry point takes.
async def send_add(*args: int, **options: Unpack[CallOptions]) -> AsyncResult[Any]:
    return await app.add_task("add", args, **options)


typed_add: TaskFunc[[int, int], int] = add
typed_countdown: TaskFunc[[int], list[int]] = countdown  # a generator task gives list[Y]
typed_stream: TaskFunc[[int], list[str]] = stream  # the context is not among the parameters


async def main() -> None:
    handle = await add.add_task(2, 3)
    assert_type(handle, AsyncResult[int])
    total: int = await handle.result(timeout=5)

    chained = add.options(priority=9, delay=timedelta(seconds=5), task_id="x", dedup_key="k")
    typed_chain: TaskCall[[int, int], int] = chained
    assert_type(await chained.options(queue="q").add_task(1, b=2), AsyncResult[int])

    # The context parameter is not part of what callers pass.
    hello: str = await (await greet.add_task("ada", excited=True)).result()
    words: int = await (await word_count.add_task("a b c")).result()

    # A generator task's result is the list of what it yielded.
    assert_type(await (await countdown.add_task(3)).result(), list[int])
    assert_type(await (await stream.add_task(3)).result(), list[str])

    # A parameter named like an option is an argument.
    waited: float = await (await wait_for.add_task(timeout=2.5)).result()
    limited = await wait_for.options(timeout=10).add_task(2.5)
    assert_type(limited, AsyncResult[float])

    batch = [add.prepare(1, 2), add.options(priority=1).prepare(3, 4)]
    assert_type(batch[0], PreparedTask[int])
    handles = await app.add_tasks(batch)

    # By name, the same options: AsyncTask (with connection), SyncTask and app.add_task.
    by_name = await AsyncTask(app).add_task("add", (1, 2), priority=3, connection=None)
    assert_type(by_name, AsyncResult[Any])
    sync_handle = SyncTask(app).add_task("add", (1, 2), headers={"trace": "t"}, expires=30)
    assert_type(sync_handle, SyncResult[Any])
    await send_add(1, 2, eta=datetime(2030, 1, 1, tzinfo=UTC), idempotency_key="k")
    print(total, hello, words, waited, handles, typed_chain)
