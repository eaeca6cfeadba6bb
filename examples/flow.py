"""Flows (seed 004): a day's data loaded, fanned out into 20 shards, joined, then reported by a
task with checkpointed steps, on the embedded backend, in a second.

The graph: ``load -> split -> report``. ``split`` fans out (``ctx.fan_out``): 20 shards each
sum a slice of the day's rows, and a join (``merge``) adds their sums up in shard order when
the last one ends; ``split``'s result, for ``report``, is the join's. No node is started by a
timer or a scan: the backend makes a node ready in the same call that stores its last parent's
end. ``report`` runs in three steps (``ctx.step``); its worker "dies" in the third one on the
first attempt (simulated here by an error; the tests SIGKILL real workers on Redis and
PostgreSQL), and the next attempt skips the two steps recorded done and resumes at the third.
The script prints the graph's progress as its tasks end.

Run it with `python examples/flow.py`: no server needed. Given a URL
(`python examples/flow.py redis://localhost:6379/0`) it runs the same on that backend.
"""

# expect: flow nightly-2026-12-04 submitted: load -> split -> report
# expect: ] load done
# expect: ] split done: 20 shards joined
# expect: [24/24] report done
# expect: report: the worker dies in step 'publish' (attempt 1)
# expect: report: attempt 2 resumes at step 'publish' (header, totals recorded)
# expect: succeeded: 24 of 24 done
# expect: 2026-12-04: 2000 rows, total 1999000, largest shard 100900

from __future__ import annotations

import os
import sys
from typing import Any

import anyio

from taskflow import FlowStatus, GlobalConfig, QueueTasks, TaskContext

DAY = "2026-12-04"
ROWS = 2000
SHARDS = 20

#: The backend: the URL given when this file runs as a script (`python examples/... URL`), else
#: $TASKFLOW_URL when it is imported (`taskflow web examples.flow:app`, `taskflow worker`), else
#: None, the embedded backend. The command line of an importing program is not a URL.
BROKER = (sys.argv[1] if __name__ == "__main__" and len(sys.argv) > 1 else None) or os.environ.get(
    "TASKFLOW_URL"
)
app = QueueTasks(
    name="flowdemo",
    broker=BROKER,
    config=GlobalConfig(lease_s=5),
)
ran_steps: list[tuple[int, str]] = []  # (attempt, step) of every step body that ran


@app.task(name="demo.load")
async def load(day: str) -> list[int]:
    return list(range(ROWS))  # the day's rows, from a warehouse in real life


@app.task(name="demo.sum_shard")
async def sum_shard(rows: list[int]) -> dict[str, int]:
    return {"rows": len(rows), "total": sum(rows)}


@app.task(name="demo.merge")
async def merge(shards: list[dict[str, int]]) -> dict[str, int]:
    return {
        "shards": len(shards),
        "rows": sum(s["rows"] for s in shards),
        "total": sum(s["total"] for s in shards),
        "largest": max(s["total"] for s in shards),
    }


@app.task(name="demo.split")
async def split(ctx: TaskContext, rows: list[int]) -> dict[str, int]:
    # Twenty shards and their join, stored in one backend call. The run ends here; the task
    # ends when its join does, with the join's result.
    return await ctx.fan_out(sum_shard, [rows[i::SHARDS] for i in range(SHARDS)], join=merge)


class WorkerDied(Exception):
    """Stands for a SIGKILL of the worker in the embedded example."""


@app.task(name="demo.report", retries=1, retry_backoff=0)
async def report(ctx: TaskContext, day: str, totals: dict[str, int]) -> str:
    header = await ctx.step("header", make_header, ctx.attempt, day)
    body = await ctx.step("totals", make_totals, ctx.attempt, totals)
    return await ctx.step("publish", publish, ctx.attempt, header, body)


def make_header(attempt: int, day: str) -> str:
    ran_steps.append((attempt, "header"))
    return f"{day}:"


def make_totals(attempt: int, totals: dict[str, int]) -> str:
    ran_steps.append((attempt, "totals"))
    return f"{totals['rows']} rows, total {totals['total']}, largest shard {totals['largest']}"


async def publish(attempt: int, header: str, body: str) -> str:
    ran_steps.append((attempt, "publish"))
    if attempt == 1:
        print("report: the worker dies in step 'publish' (attempt 1)")
        raise WorkerDied("simulated SIGKILL")
    return f"{header} {body}"


def print_progress(before: FlowStatus | None, status: FlowStatus) -> None:
    """One line per task that ended since `before` (oldest first, joins before their node)."""
    ended_before = {n.task_id for n in before.nodes if n.status.terminal} if before else set()
    finished = len(ended_before)
    for node in sorted(status.nodes, key=lambda n: (n.finished_at or 0.0, "join" not in n.node)):
        if node.status.terminal and node.task_id not in ended_before:
            finished += 1
            line = f"[{finished:>2}/{status.total}] {node.node} {node.status.value}"
            if node.node == "split":
                line += f": {SHARDS} shards joined"
            print(line)


async def main() -> None:
    flow = app.flow(f"nightly-{DAY}")
    rows = flow.add(load, DAY)
    totals = flow.add(split, after=[rows], inputs={"rows": rows})
    flow.add(report, DAY, after=[totals], inputs={"totals": totals})

    with anyio.fail_after(25):
        async with app.running():
            handle = await flow.submit()
            print(f"flow {handle.name} submitted: {' -> '.join(flow.nodes)}")
            previous: FlowStatus | None = None
            async for status in handle.watch(refresh_s=0.2):
                if previous is not None and status.total != previous.total:
                    added = status.total - previous.total
                    print(f"flow {handle.name}: {status.total} tasks (the fan-out added {added})")
                print_progress(previous, status)
                previous = status
            results: dict[str, Any] = await handle.result()

    assert previous is not None
    print(f"{previous.state.value}: {previous.summary}")
    second = [step for attempt, step in ran_steps if attempt == 2]
    first = [step for attempt, step in ran_steps if attempt == 1]
    print(f"report: attempt 2 resumes at step {second[0]!r} ({', '.join(first[:-1])} recorded)")
    print(results["report"])


if __name__ == "__main__":
    anyio.run(main)
