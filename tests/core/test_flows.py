"""Flows end to end in one process (memory backend, real workers): a graph's nodes start when
their parents end and get their results as inputs; failure policies (fail, skip, run with
`NodeFailed`); `ctx.fan_out` with the built-in join and one of the task's own, partial
results, a failing shard, a fan-out outside a flow, a run repeated after a fan-out storing
nothing new; the handle (status, roll-up, wait, result, watch, cancel, get_flow). The
backends' side of the same rules is tests/conformance/test_flows.py; crashes are
tests/backends/test_flow_kill.py."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from taskflow import (
    FailurePolicy,
    FlowFailed,
    FlowNotFound,
    FlowState,
    GlobalConfig,
    InvalidFlow,
    NodeFailed,
    QueueTasks,
    Retry,
    TaskContext,
    TaskStatus,
)
from taskflow.abc import SKIPPED, UPSTREAM_FAILED, EventKind


@pytest.fixture
def app() -> QueueTasks:
    return QueueTasks(name="flows", config=GlobalConfig(lease_s=3, heartbeat_s=0.1))


async def test_nodes_run_after_their_parents_with_their_results_as_inputs(
    app: QueueTasks,
) -> None:
    order: list[str] = []

    @app.task
    async def load(day: str) -> list[int]:
        order.append("load")
        return [1, 2, 3, 4]

    @app.task
    async def total(rows: list[int], scale: int) -> int:
        order.append(f"total*{scale}")
        return sum(rows) * scale

    @app.task
    async def report(day: str, totals: list[int], first: int) -> str:
        order.append("report")
        return f"{day}: {totals} first={first}"

    flow = app.flow("nightly")
    rows = flow.add(load, "2026-12-01")
    one = flow.add(total, after=[rows], inputs={"rows": rows}, scale=1)
    ten = flow.add(total, after=[rows], inputs={"rows": rows}, scale=10)
    end = flow.add(
        report, "2026-12-01", after=[one, ten], inputs={"totals": [one, ten], "first": one}
    )
    with anyio.fail_after(10):
        async with app.running():
            handle = await flow.submit()
            results = await handle.result(timeout=5)
    assert results == {
        "load": [1, 2, 3, 4],
        "total": 10,
        "total#2": 100,
        "report": "2026-12-01: [10, 100] first=10",
    }
    assert order[0] == "load" and order[-1] == "report"
    assert set(handle.tasks) == {"load", "total", "total#2", "report"}
    assert handle.tasks["report"] == end.task_id
    status = await handle.status()
    assert status.state is FlowState.SUCCEEDED
    assert status.summary == "4 of 4 done"
    assert status.node("report").waits_for == [one.task_id, ten.task_id]
    record = await app.get(rows.task_id or "")
    assert record is not None and record.flow_id == handle.flow_id and record.node == "load"


async def test_a_failed_parent_fails_skips_or_runs_its_children_per_policy(
    app: QueueTasks,
) -> None:
    seen: list[Any] = []

    @app.task(retries=0)
    async def load(day: str) -> int:
        raise KeyError(day)

    @app.task
    async def use(value: Any = None) -> str:
        seen.append(value)
        return "ran"

    flow = app.flow("nightly", after_failure=FailurePolicy.SKIP)
    bad = flow.add(load, "d")
    failing = flow.add(use, after=[bad], after_failure="fail", name="failing")
    flow.add(use, after=[bad], name="skipped")
    running = flow.add(use, after=[bad], inputs={"value": bad}, after_failure="run", name="run")
    below = flow.add(use, after=[failing], name="below")  # skipped in turn
    with anyio.fail_after(10):
        async with app.running():
            handle = await flow.submit()
            with pytest.raises(FlowFailed) as caught:
                await handle.result(timeout=5)
    status = caught.value.status
    assert status.state is FlowState.FAILED
    by_node = {n.node: n for n in status.nodes}
    assert by_node["load"].reason == "KeyError: 'd'"
    assert by_node["failing"].status is TaskStatus.FAILED
    assert (by_node["failing"].reason or "").startswith(f"{UPSTREAM_FAILED}: load (")
    assert by_node["skipped"].status is TaskStatus.CANCELLED
    assert (by_node["skipped"].reason or "").startswith(f"{SKIPPED}: load (")
    assert by_node["run"].status is TaskStatus.DONE
    assert by_node["below"].status is TaskStatus.CANCELLED
    assert [type(v) for v in seen] == [NodeFailed]
    failed = seen[0]
    assert (failed.node, failed.task_id, failed.status) == ("load", bad.task_id, "failed")
    assert failed.reason == "KeyError: 'd'"
    assert status.summary.startswith("1 of 5 done, 2 failed: KeyError: 'd'; UpstreamFailed")
    assert status.summary.endswith(", 2 cancelled")
    assert "KeyError: 'd'" in str(caught.value)
    assert (running.task_id, below.task_id) != (None, None)


async def test_a_fan_out_joins_its_shards_in_order_and_its_node_passes_the_join_on(
    app: QueueTasks,
) -> None:
    runs: list[str] = []

    @app.task
    async def count(part: int, day: str) -> int:
        return part * 10

    @app.task
    async def merge(results: list[int]) -> int:
        runs.append("merge")
        return sum(results)

    @app.task
    async def split(ctx: TaskContext, day: str) -> int:
        runs.append("split")
        return await ctx.fan_out(count, range(20), join=merge, kwargs={"day": day})

    @app.task
    async def publish(total: int) -> str:
        return f"total {total}"

    flow = app.flow("shards")
    fan = flow.add(split, "d")
    end = flow.add(publish, after=[fan], inputs={"total": fan})
    with anyio.fail_after(10):
        async with app.running():
            handle = await flow.submit()
            status = await handle.wait(timeout=5)
            fanned = await app.result(fan.task_id or "").result(timeout=1)
            published = await app.result(end.task_id or "").result(timeout=1)
            events = await app.storage.read_events("default")
    assert fanned == sum(i * 10 for i in range(20)) and published == f"total {fanned}"
    assert runs == ["split", "merge"]
    assert status.state is FlowState.SUCCEEDED
    assert status.total == 2 + 20 + 1
    names = [n.node for n in status.nodes]
    assert {f"split.shard[{i}]" for i in range(20)} <= set(names)
    assert "split.join" in names
    waited = [e for e in events if e.task_id == fan.task_id and e.kind is EventKind.WAITING]
    assert [e.detail for e in waited][-1] == status.node("split.join").task_id
    assert all(e.flow_id == handle.flow_id for e in events if e.task_id == fan.task_id)


async def test_partial_results_give_the_join_none_or_node_failed(app: QueueTasks) -> None:
    got: list[Any] = []

    @app.task(retries=0, name="shard")
    async def shard(part: int) -> int:
        if part == 2:
            raise ValueError("bad part")
        return part

    @app.task(name="own_join")
    async def own_join(results: list[Any]) -> int:
        got.extend(results)
        return len(results)

    @app.task
    async def builtin(ctx: TaskContext) -> list[int | None]:
        return await ctx.fan_out(shard, range(4), partial=True)

    @app.task
    async def own(ctx: TaskContext) -> int:
        return await ctx.fan_out("shard", [0, 2], join="own_join", partial=True)

    with anyio.fail_after(10):
        async with app.running():
            assert await (await builtin.add_task()).result(timeout=5) == [0, 1, None, 3]
            assert await (await own.add_task()).result(timeout=5) == 2
    assert got[0] == 0
    assert isinstance(got[1], NodeFailed) and got[1].reason == "ValueError: bad part"
    assert got[1].node == "own.shard[1]"


async def test_a_failing_shard_fails_the_fanning_task_with_its_reason(app: QueueTasks) -> None:
    @app.task(retries=0)
    async def shard(part: int) -> int:
        raise ValueError(f"bad part {part}")

    @app.task
    async def fan(ctx: TaskContext) -> None:
        await ctx.fan_out(shard, [7])

    with anyio.fail_after(10):
        async with app.running():
            handle = await fan.add_task()
            with pytest.raises(Exception, match="ValueError: bad part 7") as caught:
                await handle.result(timeout=5)
    assert getattr(caught.value, "error_type", None) == UPSTREAM_FAILED


async def test_a_fan_out_outside_a_flow_starts_a_flow_of_the_tasks_own_id(
    app: QueueTasks,
) -> None:
    @app.task
    async def double(x: int) -> int:
        return 2 * x

    @app.task
    def sync_fan(ctx: TaskContext, n: int) -> list[int]:
        assert threading.current_thread() is not threading.main_thread()
        return ctx.fan_out_sync(double, range(n))

    with anyio.fail_after(10):
        async with app.running():
            handle = await sync_fan.add_task(3)
            assert await handle.result(timeout=5) == [0, 2, 4]
            flow = await app.get_flow(handle.task_id)
            status = await flow.wait(timeout=5)
    assert status.state is FlowState.SUCCEEDED
    assert sorted(n.node for n in status.nodes) == [
        "sync_fan.join",
        "sync_fan.shard[0]",
        "sync_fan.shard[1]",
        "sync_fan.shard[2]",
    ]


async def test_a_run_repeated_after_its_fan_out_stores_nothing_new(app: QueueTasks) -> None:
    runs: list[int] = []
    release = anyio.Event()
    fanned_again = anyio.Event()

    @app.task
    async def slow(part: int) -> int:
        await release.wait()
        return part

    @app.task(retries=2, retry_backoff=0)
    async def fan(ctx: TaskContext) -> list[int]:
        runs.append(ctx.attempt)
        join_id = await ctx.fan_out(slow, range(5))
        if ctx.attempt == 2:
            fanned_again.set()
        if ctx.attempt == 1:
            raise Retry(delay=0)  # the run fails after fanning out; the next one fans again
        return join_id  # type: ignore[no-any-return]  # ignored: the result is the join's

    with anyio.fail_after(10):
        async with app.running():
            handle = await fan.add_task()
            await fanned_again.wait()
            flow = await app.get_flow(handle.task_id)
            before = (await flow.status()).total
            release.set()
            assert await handle.result(timeout=5) == [0, 1, 2, 3, 4]
            after = await flow.status()
    assert runs == [1, 2]
    assert before == after.total == 6  # 5 shards and one join, stored once


async def test_a_second_fan_out_in_one_run_is_refused(app: QueueTasks) -> None:
    @app.task
    async def one(x: int) -> int:
        return x

    @app.task(retries=0)
    async def twice(ctx: TaskContext) -> None:
        await ctx.fan_out(one, [1])
        try:
            await ctx.fan_out(one, [2])
        except InvalidFlow as exc:
            raise RuntimeError(str(exc)) from None

    with anyio.fail_after(10):
        async with app.running():
            handle = await twice.add_task()
            with pytest.raises(Exception, match="fanned out already in this run"):
                await handle.result(timeout=5)


async def test_cancel_reaches_waiting_queued_and_running_tasks(app: QueueTasks) -> None:
    started = anyio.Event()

    @app.task
    async def hang() -> None:
        started.set()
        await anyio.sleep_forever()

    @app.task
    async def after_it() -> str:
        return "never"

    flow = app.flow("stuck")
    first = flow.add(hang)
    flow.add(after_it, after=[first])
    flow.add(after_it, after=[first], name="other")
    with anyio.fail_after(10):
        async with app.running():
            handle = await flow.submit()
            await started.wait()
            assert await handle.cancel() == 3
            status = await handle.wait(timeout=5)
    assert status.state is FlowState.CANCELLED
    assert [n.status for n in status.nodes] == [TaskStatus.CANCELLED] * 3


async def test_watch_yields_each_change_until_the_end(app: QueueTasks) -> None:
    gate = anyio.Event()

    @app.task
    async def step(n: int) -> int:
        if n == 1:
            await gate.wait()
        return n

    flow = app.flow("watched")
    a = flow.add(step, 0)
    flow.add(step, 1, after=[a])
    seen: list[str] = []
    with anyio.fail_after(10):
        async with app.running():
            handle = await flow.submit()
            async for status in handle.watch():
                seen.append(status.summary)
                if status.counts.running:
                    gate.set()
    assert seen[-1] == "2 of 2 done"
    assert len(seen) >= 2


async def test_get_flow_of_an_unknown_id_raises(app: QueueTasks) -> None:
    async with app:
        with pytest.raises(FlowNotFound, match="no task of flow 'nope' is stored"):
            await app.get_flow("nope")


def test_submit_sync_and_the_sync_handle(app: QueueTasks) -> None:
    @app.task
    async def one() -> int:
        return 1

    flow = app.flow("sync")
    flow.add(one)
    with app.run_in_thread():
        handle = flow.submit_sync()
        assert handle.result(timeout=5) == {"one": 1}
        assert handle.status().summary == "1 of 1 done"
        assert handle.wait(timeout=1).state is FlowState.SUCCEEDED
        assert handle.cancel() == 0
    app.close_sync()


async def test_a_flow_is_submitted_once(app: QueueTasks) -> None:
    @app.task
    async def one() -> int:
        return 1

    flow = app.flow("once")
    node = flow.add(one)
    async with app:
        await flow.submit()
        with pytest.raises(InvalidFlow, match="was submitted already"):
            await flow.submit()
        with pytest.raises(InvalidFlow, match="was submitted already"):
            node.after(node)


async def test_cancel_reaches_the_shards_and_the_join_of_a_fan_out(app: QueueTasks) -> None:
    started: list[int] = []
    all_started = anyio.Event()

    @app.task
    async def hang(part: int) -> int:
        started.append(part)
        if len(started) == 3:
            all_started.set()
        await anyio.sleep_forever()
        return part

    @app.task
    async def fan(ctx: TaskContext) -> list[int]:
        return await ctx.fan_out(hang, range(5))

    flow = app.flow("fanned")
    node = flow.add(fan)
    with anyio.fail_after(10):
        async with app.running(concurrency=3):
            handle = await flow.submit()
            await all_started.wait()  # 3 shards run, 2 are queued, the node waits for its join
            assert await handle.cancel() == 1 + 5 + 1
            status = await handle.wait(timeout=5)
    assert status.state is FlowState.CANCELLED
    assert status.counts.cancelled == 7
    assert status.node("fan").task_id == node.task_id
    join = status.node("fan.join")
    assert join.status is TaskStatus.CANCELLED
