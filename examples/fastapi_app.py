"""A FastAPI service over a module-level app: workers in the lifespan, endpoints that send tasks
and read their results, and the test pattern (Starlette's `TestClient`, entered twice).

Serve it with `uvicorn examples.fastapi_app:api` (pip install fastapi uvicorn), or run this file
(`python examples/fastapi_app.py`): it drives the API with two TestClients one after the other,
as a test suite does, on the in-memory backend. For workers in other processes, give the app a
server (`broker="redis://localhost:6379/0"`), replace `app.running(...)` in the lifespan with
`async with app:` and start `taskflow worker examples.fastapi_app:app`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from taskflow import QueueTasks, TaskContext, TaskFailed, TaskNotFound
from taskflow import TimeoutError as TaskTimeoutError

app = QueueTasks(name="web")  # module level; tasks are decorated at import


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task(retries=0)
async def resize(ctx: TaskContext, image: str, sizes: list[int]) -> list[str]:
    done = []
    for n, size in enumerate(sizes, start=1):
        await anyio.sleep(0.01)  # the work
        done.append(f"{image}@{size}")
        ctx.progress(n, len(sizes), f"{size}px")
    if not sizes:
        raise ValueError("no sizes asked for")
    return done


@contextlib.asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    # Opens the app at start-up (a server that is down fails the start, not the first request)
    # and runs a worker in the server's event loop until shutdown.
    async with app.running(concurrency=10):
        yield


api = FastAPI(lifespan=lifespan)


@api.post("/add")
async def send_add(a: int, b: int) -> dict[str, str]:
    handle = await add.add_task(a, b)
    return {"task_id": handle.task_id}


@api.post("/resize")
def send_resize(image: str, sizes: list[int]) -> dict[str, str]:
    # A plain `def` endpoint runs in a thread: the blocking twin sends on the app's loop.
    return {"task_id": resize.add_task_sync(image, sizes).task_id}


@api.get("/tasks/{task_id}")
async def read_task(task_id: str, wait: float = 0) -> dict[str, Any]:
    """The task's status and progress; with `?wait=SECONDS`, its result once it has one."""
    handle = app.result(task_id)
    try:
        if wait:
            with contextlib.suppress(TaskTimeoutError):
                return {"status": "done", "result": await handle.result(timeout=wait)}
        info = await handle.info()
    except TaskNotFound:
        raise HTTPException(404, f"no task {task_id}") from None
    except TaskFailed as exc:
        return {"status": "failed", "error": f"{exc.error_type}: {exc.error_message}"}
    progress = info.progress
    return {
        "status": info.status.value,
        "progress": None if progress is None else f"{progress.done}/{progress.total}",
    }


def main() -> None:
    # Two clients one after the other, each with its own event loop, as two tests would: the
    # lifespan opens the app on each loop, and the app closes with each.
    for round_ in (1, 2):
        with TestClient(api) as client:
            sent = client.post("/add", params={"a": 2, "b": round_}).json()
            answer = client.get(f"/tasks/{sent['task_id']}", params={"wait": 5}).json()
            print(f"round {round_}: add(2, {round_}) = {answer['result']}")
    with TestClient(api) as client:
        sent = client.post("/resize", params={"image": "cat.png"}, json=[64, 128]).json()
        answer = client.get(f"/tasks/{sent['task_id']}", params={"wait": 5}).json()
        print("resize:", answer["result"])
        failed = client.post("/resize", params={"image": "dog.png"}, json=[]).json()
        print("resize with no sizes:", client.get(f"/tasks/{failed['task_id']}?wait=5").json())
        print("unknown task:", client.get("/tasks/nope").status_code)


if __name__ == "__main__":
    main()

# expect: round 1: add(2, 1) = 3
# expect: round 2: add(2, 2) = 4
# expect: resize: ['cat.png@64', 'cat.png@128']
# expect: resize with no sizes: {'status': 'failed', 'error': 'ValueError: no sizes asked for'}
# expect: unknown task: 404
