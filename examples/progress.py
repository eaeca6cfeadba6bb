"""Progress and yielded values, watched from the producer while the task runs.

Run it with `python examples/progress.py`. The task is an async generator: every value it yields
is recorded and visible through `info().yields` while it still runs, and `ctx.progress(done,
total)` is visible through `info().progress`. Its result is the list of everything it yielded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from taskflow import QueueTasks, TaskContext

app = QueueTasks(name="progress")


@app.task
async def resize_images(ctx: TaskContext, names: list[str]) -> AsyncIterator[str]:
    for done, name in enumerate(names, start=1):
        await anyio.sleep(0.2)  # stands in for real work
        yield f"{name} -> thumbs/{name}"
        ctx.progress(done, len(names), message=f"resized {name}")


async def main() -> None:
    async with app.running(concurrency=2):
        handle = await resize_images.add_task(["a.png", "b.png", "c.png", "d.png"])

        # Watch it from the producer side. (A real producer would refresh a UI or a log line;
        # waiting for the result itself never polls, it is pushed.)
        seen = -1
        while not (info := await handle.info()).status.terminal:
            if info.progress is not None and info.progress.done != seen:
                seen = info.progress.done
                print(
                    f"{info.status.value}: {info.progress.done}/{info.progress.total} "
                    f"({info.progress.message}); yields so far: {len(info.yields)}"
                )
            await anyio.sleep(0.02)

        print("result:", await handle.result(timeout=5))
        final = await handle.info()
        print(f"final: {final.status.value}, progress {final.progress}, attempts {final.attempts}")


if __name__ == "__main__":
    anyio.run(main)
