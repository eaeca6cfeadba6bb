"""Exports (seed 001): a queue of data exports, on the embedded backend, in a few seconds.

The seed's queue: users ask for exports of the warehouse table ``dwh.sales`` (one station
each); an export reads the table in chunks of CHUNK_SIZE rows, shows "loaded n of m", then
"file ready"; while exports read the table it must not be swapped for its freshly built
replacement, which waits; the file is deleted once the user downloaded it, or 72 hours after it
was ready, and the job then shows "hidden by the queue manager". Here:

1. A worker dies in the middle of an export (this script cancels it, as a SIGKILL would end
   it; the tests do the real SIGKILL on Redis and PostgreSQL). Another worker takes the export
   over and resumes at the chunk that was not finished, not at row 0.
2. Two more exports read the table together under a shared lock. The "replace table" job
   declares the exclusive lock: it waits, holding no worker slot, and an export asked for
   after it waits behind it, so a stream of exports cannot starve the swap.
3. Every export leaves its file as an artifact. One is downloaded (and so deleted); the others
   are hidden by a worker's housekeeping 72 hours later (time is a `FakeClock`).

Run it with `python examples/exports.py`: no server needed. Given a URL
(`python examples/exports.py redis://localhost:6379/0`) it runs the same on that backend.
"""

# expect: export Moscow: resumes at row 500, not at row 0
# expect: replace table: waits for the lock on dwh.sales, holding no worker slot
# expect: lock dwh.sales: held by shared, shared; waiting in turn: exclusive, shared
# expect: Moscow.csv: deleted, deleted after its first complete fetch
# expect: Kazan.csv: hidden by the queue manager (expired, kept 72 h after it was ready)
# expect: 'Moscow': 250, 'Kazan': 250, 'Omsk': 250, 'Tver': 300
# expect: the swap started after the readers finished: True
# expect: the export asked for after the swap ran after it, on the new table: True

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from taskflow import (
    ArtifactNotFound,
    AsyncResult,
    Event,
    EventKind,
    Exclusive,
    GlobalConfig,
    QueueTasks,
    Shared,
    TaskContext,
    Worker,
)
from taskflow.testing import FakeClock

CHUNK_SIZE = 250  # the seed's CHUNK_SIZE: rows read per step
TABLE = "dwh.sales"
STATIONS = ["Moscow", "Kazan", "Omsk", "Tver"]

#: The backend: the URL given when this file runs as a script (`python examples/... URL`), else
#: $TASKFLOW_URL when it is imported (`taskflow web examples.flow:app`, `taskflow worker`), else
#: None, the embedded backend. The command line of an importing program is not a URL.
BROKER = (sys.argv[1] if __name__ == "__main__" and len(sys.argv) > 1 else None) or os.environ.get(
    "TASKFLOW_URL"
)
clock = FakeClock(dt.datetime(2026, 12, 4, 9, tzinfo=dt.UTC).timestamp())
app = QueueTasks(
    name="exports",
    broker=BROKER,
    clock=clock,
    config=GlobalConfig(cleanup_interval_s=600),  # each worker's housekeeping pass
)


@dataclass
class Table:
    """The warehouse table the exports read: version 1; "replace table" swaps in version 2."""

    version: int
    rows: list[tuple[str, int]]


table = Table(1, [(STATIONS[i % 4], i) for i in range(1_000)])
parts: dict[str, dict[int, bytes]] = {}  # task id -> first row of a chunk -> its CSV lines
crash_here = anyio.Event()  # the first worker reached the chunk it dies in
readers_go = anyio.Event()  # let the readers finish (so they are reading while the swap waits)
bodies: list[str] = []  # what the task bodies did, in the order they did it (for the summary)


@app.task(
    locks=[Shared(TABLE)],  # many exports read the table together; the swap waits for them
    retries=2,
    artifacts_keep=dt.timedelta(hours=72),  # the seed's HOW_MANY_HOURS_TO_STORE
    artifacts_delete_after_fetch=True,  # or deleted once the user downloaded it
)
async def export(ctx: TaskContext, station: str, crash_at_row: int = -1) -> int:
    """Export one station's rows of dwh.sales, CHUNK_SIZE rows a step, into a CSV artifact."""
    rows, version = table.rows, table.version
    mine = parts.setdefault(ctx.task_id, {})  # the file's chunks so far, on a shared disk
    bodies.append(f"{station} starts")
    first = True
    chunks = ctx.chunks(range(len(rows)), size=CHUNK_SIZE, message="loaded {done} of {total}")
    async for chunk in chunks:  # each chunk is recorded done once its body returned
        if first and chunk.start > 0:
            print(f"   export {station}: resumes at row {chunk.start}, not at row 0")
        first = False
        if chunk.start == crash_at_row and not crash_here.is_set():
            print(f"   export {station}: the worker dies while loading rows from {chunk.start}")
            crash_here.set()
            await anyio.sleep_forever()  # the script takes this worker away now
        if station in ("Kazan", "Omsk") and chunk.start == CHUNK_SIZE:
            await readers_go.wait()
        lines = [f"{s},{n},v{version}\n" for s, n in rows[chunk.start : chunk.stop] if s == station]
        mine[chunk.start] = "".join(lines).encode()
    await ctx.artifacts.put(f"{station}.csv", csv_file(mine))  # streamed, a chunk at a time
    print(f"   export {station}: file ready")
    bodies.append(f"{station} ends")
    return sum(part.count(b"\n") for part in mine.values())


async def csv_file(chunks: dict[int, bytes]) -> AsyncIterator[bytes]:
    yield b"station,row,table_version\n"
    for start in sorted(chunks):
        yield chunks[start]


@app.task(locks=[Exclusive(TABLE)])
async def replace_table() -> int:
    """Swap dwh.sales for its freshly built replacement: alone, while no export reads it."""
    table.rows = [(STATIONS[i % 4], i) for i in range(1_200)]
    table.version += 1
    bodies.append("swap")
    return table.version


class Feed:
    """Prints the queue's event stream as it happens, and lets the script wait for an event.

    It shows only this run's tasks (named with `label`): a server may keep the events of
    earlier runs of this script."""

    def __init__(self) -> None:
        self.seen: list[Event] = []
        self._labels: dict[str, str] = {}  # task id -> what the user calls it
        self._unlabelled: dict[str, list[Event]] = {}
        self._new = anyio.Event()

    def label(self, task_id: str, text: str) -> None:
        self._labels[task_id] = text
        for event in self._unlabelled.pop(task_id, []):
            self.show(event)

    async def follow(self) -> None:
        async for event in app.storage.follow_events(app.config.default_queue):
            self.seen.append(event)
            self._new.set()
            self._new = anyio.Event()
            if event.task_id in self._labels:
                self.show(event)
            else:
                self._unlabelled.setdefault(event.task_id, []).append(event)

    def show(self, event: Event) -> None:
        who = self._labels[event.task_id]
        if event.kind is EventKind.PROGRESS:
            done, _, total = (event.detail or "").partition("/")
            print(f"   {who}: loaded {done} of {total}")
        elif event.kind is EventKind.RELEASED and event.detail == "WaitingForLock":
            print(f"   {who}: waits for the lock on {TABLE}, holding no worker slot")
        elif event.kind is EventKind.RUNNING:
            print(f"   {who}: running (attempt {event.attempt})")
        elif event.kind is EventKind.DONE:
            print(f"   {who}: done")

    async def until(self, wanted: Callable[[Event], bool]) -> None:
        with anyio.fail_after(30):
            while not any(wanted(event) for event in self.seen):
                await self._new.wait()


async def main() -> None:
    feed = Feed()
    async with app, anyio.create_task_group() as watching:
        watching.start_soon(feed.follow)
        moscow = await a_worker_dies(feed)
        async with app.running(concurrency=4):
            print("   another worker takes the export over:")
            await moscow.result(timeout=30)
            readers, tver = await readers_and_the_swap(feed)
            stations = {"Moscow": moscow, "Kazan": readers[0], "Omsk": readers[1], "Tver": tver}
            rows = {station: await h.result() for station, h in stations.items()}
            await files_and_their_retention(moscow, [*readers, tver])
        watching.cancel_scope.cancel()
    summary(rows)


async def a_worker_dies(feed: Feed) -> AsyncResult[int]:
    print("1. a worker dies in the middle of an export")
    async with anyio.create_task_group() as first_worker:
        await first_worker.start(Worker(app, concurrency=2).run)
        moscow = await export.add_task("Moscow", crash_at_row=2 * CHUNK_SIZE)
        feed.label(moscow.task_id, "export Moscow")
        await crash_here.wait()
        first_worker.cancel_scope.cancel()  # gone mid-chunk, as a SIGKILL would end it
    return moscow


async def readers_and_the_swap(
    feed: Feed,
) -> tuple[list[AsyncResult[int]], AsyncResult[int]]:
    print("2. two exports read the table; the swap waits; a late export waits behind it")
    readers = [await export.add_task(station) for station in ("Kazan", "Omsk")]
    for station, handle in zip(("Kazan", "Omsk"), readers, strict=True):
        feed.label(handle.task_id, f"export {station}")
    for handle in readers:  # both are past their first chunk: both hold the shared lock
        await feed.until(progress_of(handle.task_id))
    swap = await replace_table.add_task()
    feed.label(swap.task_id, "replace table")
    await feed.until(parked(swap.task_id))
    tver = await export.add_task("Tver")
    feed.label(tver.task_id, "export Tver")
    await feed.until(parked(tver.task_id))
    print(f"   {await lock_line()}")
    readers_go.set()
    for handle in [*readers, swap, tver]:
        await handle.result(timeout=30)
    await feed.until(lambda e: e.task_id == tver.task_id and e.kind is EventKind.DONE)
    return readers, tver


async def files_and_their_retention(
    downloaded: AsyncResult[int], rest: list[AsyncResult[int]]
) -> None:
    print("3. files: one downloaded (and so deleted), the rest hidden after 72 hours")
    with tempfile.TemporaryDirectory() as downloads:
        path = await downloaded.fetch_artifact_to("Moscow.csv", Path(downloads) / "Moscow.csv")
        print(f"   the user downloaded Moscow.csv ({path.stat().st_size} bytes)")
    [info] = await downloaded.artifacts()
    print(f"   {info.name}: {info.state.value}, {info.ended_why}")
    await clock.advance(72 * 3600 + 600)  # the workers' housekeeping runs
    for handle in rest:
        [info] = await handle.artifacts()
        print(f"   {info.name}: hidden by the queue manager ({info.state.value}, {info.ended_why})")
    try:
        await rest[0].fetch_artifact_to("Kazan.csv", "Kazan.csv")
    except ArtifactNotFound as exc:
        print(f"   fetching Kazan.csv now: {exc}")


def progress_of(task_id: str) -> Callable[[Event], bool]:
    return lambda e: e.task_id == task_id and e.kind is EventKind.PROGRESS


def parked(task_id: str) -> Callable[[Event], bool]:
    return lambda e: e.task_id == task_id and e.detail == "WaitingForLock"


async def lock_line() -> str:
    [state] = await app.coordination.lock_states([TABLE], now=clock.time())
    holders = ", ".join(h.mode.value for h in state.holders) or "nobody"
    waiters = ", ".join(w.mode.value for w in state.waiters) or "nobody"
    return f"lock {TABLE}: held by {holders}; waiting in turn: {waiters}"


def summary(rows: dict[str, int]) -> None:
    print("summary")
    print(f"- rows exported per station: {rows} (Moscow's 250: none lost, none twice)")
    swap = bodies.index("swap")
    after_readers = swap > max(bodies.index("Kazan ends"), bodies.index("Omsk ends"))
    print(f"- the swap started after the readers finished: {after_readers}")
    after_swap = bodies.index("Tver starts") > swap
    print(f"- the export asked for after the swap ran after it, on the new table: {after_swap}")


if __name__ == "__main__":
    anyio.run(main)
