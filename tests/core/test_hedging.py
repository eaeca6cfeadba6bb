"""Hedged stragglers, the worker's side: `Hedge` and its option (decorator and per call, on the
message), thresholds (fixed, percentile once enough runs are known), run times shared through
the coordination store, one copy at most and only while another live worker serves the queue,
the copy's message, and a copy given back by the worker running its task. The race between a
copy and its task is the backends' (tests/conformance/test_flows.py); with real workers it is in
tests/backends/test_hedging_race.py and tests/backends/test_hedging_processes.py."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from taskflow import GlobalConfig, Hedge, InvalidOption, QueueTasks, WorkerInfo
from taskflow._hedging import GIVE_BACK_S, HEDGE_KEY, Hedging, hedge_copy
from taskflow._ids import derived_task_id
from taskflow._message import (
    Delivery,
    Outcome,
    OutcomeKind,
    TaskMessage,
    decode_message,
)
from taskflow._run import Run
from taskflow._run_times import RunTimes, percentile
from taskflow.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> QueueTasks:
    config = GlobalConfig(lease_s=10, heartbeat_s=3, idle_poll_s=1000)
    return QueueTasks(name="t", clock=clock, config=config)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, "Hedge needs a threshold"),
        ({"percentile": 0}, "percentile=...) must be a number in (0, 100)"),
        ({"percentile": 100}, "percentile=...) must be a number in (0, 100)"),
        ({"after": 0}, "after=...) must be seconds > 0"),
        ({"after": -1.0}, "after=...) must be seconds > 0"),
        ({"percentile": 95, "min_samples": 0}, "min_samples=...) must be an int >= 1"),
    ],
)
def test_a_hedge_without_a_valid_threshold_is_refused(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match="Hedge") as caught:
        Hedge(**kwargs)
    assert words in str(caught.value)


def test_percentile_is_the_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 95) == 95.0
    assert percentile(samples, 50) == 50.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0


async def _claimed_message(app: QueueTasks) -> tuple[Delivery, TaskMessage]:
    [delivery] = await app.broker.claim(
        ["default"], limit=1, lease_s=10, now=app.clock.time(), worker_id="w1"
    )
    return delivery, decode_message(delivery.data)


async def test_the_option_travels_on_the_message_from_the_decorator_and_per_call(
    app: QueueTasks,
) -> None:
    @app.task(hedge=Hedge(percentile=95, after=30.0))
    async def slow() -> None: ...

    @app.task
    async def plain() -> None: ...

    async with app:
        await slow.add_task()
        assert (await _claimed_message(app))[1].hedge == Hedge(percentile=95, after=30.0)
        await slow.options(hedge=Hedge(after=2.0)).add_task()
        assert (await _claimed_message(app))[1].hedge == Hedge(after=2.0)
        await slow.options(hedge=None).add_task()
        assert (await _claimed_message(app))[1].hedge is None
        await plain.add_task()
        assert (await _claimed_message(app))[1].hedge is None


def test_a_bad_option_value_is_refused(app: QueueTasks) -> None:
    with pytest.raises(InvalidOption, match=r"hedge must be a taskflow.Hedge"):

        @app.task(hedge=95)  # type: ignore[call-overload]
        async def slow() -> None: ...


def test_the_copy_is_the_same_task_with_its_own_derived_id() -> None:
    message = TaskMessage(
        id="1m91xd8em0004wr1zzrfgtdc0vv2d8",
        name="report",
        queue="default",
        payload=b"\x92\x90\x80",
        eta=5.0,
        expires_at=50.0,
        dedup_key="k",
        dedup_ttl_s=60.0,
        flow_id="f",
        node="report",
        waits_for=["a"],
        children=[("c", "default")],
        inputs={"rows": "a"},
        hedge=Hedge(after=1.0),
    )
    copy = hedge_copy(message, now=100.0)
    assert copy.id == derived_task_id(message.id, HEDGE_KEY, "default") != message.id
    assert (copy.outcome_to, copy.copy) == (message.id, True)
    assert (copy.name, copy.queue, copy.payload) == (message.name, message.queue, message.payload)
    assert (copy.flow_id, copy.inputs, copy.hedge) == ("f", {"rows": "a"}, Hedge(after=1.0))
    assert (copy.node, copy.waits_for, copy.children) == (None, [], [])
    assert (copy.dedup_key, copy.dedup_ttl_s, copy.eta, copy.expires_at) == (None,) * 4
    assert copy.created_at == 100.0


def _other_worker(worker_id: str, queues: tuple[str, ...] = ("default",)) -> WorkerInfo:
    return WorkerInfo(id=worker_id, host="h", pid=1, queues=queues, concurrency=1, started_at=0)


async def _start_run(app: QueueTasks, hedging: Hedging, runs: dict[str, Run]) -> Run:
    delivery, message = await _claimed_message(app)
    run = Run(delivery, lambda _: None)
    runs[run.task_id] = run
    hedging.started(run, message)
    return run


async def test_a_straggler_gets_one_copy_only_while_another_worker_serves_its_queue(
    app: QueueTasks, clock: FakeClock
) -> None:
    @app.task(hedge=Hedge(after=5.0))
    async def slow() -> None: ...

    runs: dict[str, Run] = {}
    async with app:
        hedging = Hedging(
            app.broker, app.coordination, clock, worker_id="w1", runs=runs, period_s=1
        )
        await app.coordination.register_workers(
            [_other_worker("w1"), _other_worker("w3", ("emails",))], ttl_s=60, now=clock.time()
        )
        handle = await slow.add_task()
        run = await _start_run(app, hedging, runs)
        copy_id = derived_task_id(handle.task_id, HEDGE_KEY, "default")

        await clock.advance(4.9)
        await hedging.check()  # not past its threshold yet
        await clock.advance(0.2)
        await hedging.check()  # past it, but no other worker serves "default"
        assert await app.storage.get(copy_id, now=clock.time()) is None

        await app.coordination.register_workers([_other_worker("w2")], ttl_s=60, now=clock.time())
        await hedging.check()
        assert await app.storage.get(copy_id, now=clock.time()) is not None

        await clock.advance(2)  # (the task's lease of 10 s still holds)
        await hedging.check()  # one copy at most
        [claimed] = await app.broker.claim(
            ["default"], limit=5, lease_s=10, now=clock.time(), worker_id="w2"
        )
        assert claimed.task_id == copy_id
        copy = decode_message(claimed.data)
        assert (copy.outcome_to, copy.copy) == (handle.task_id, True)
        # The worker running the task gives its copy back for another.
        given_back = hedging.give_back(Run(claimed, lambda _: None), decode_message(claimed.data))
        assert given_back == Outcome(
            copy_id, claimed.token, OutcomeKind.RELEASE, retry_at=clock.time() + GIVE_BACK_S
        )
        del runs[run.task_id]
        assert hedging.give_back(Run(claimed, lambda _: None), decode_message(claimed.data)) is None


async def test_the_percentile_threshold_uses_run_times_shared_by_the_workers(
    app: QueueTasks, clock: FakeClock
) -> None:
    hedge = Hedge(percentile=90, min_samples=10, after=100.0)
    async with app:
        one = RunTimes(app.coordination)
        two = RunTimes(app.coordination)
        for i in range(6):
            one.add("report", float(i + 1))  # 1..6
        for i in range(6):
            two.add("report", float(i + 11))  # 11..16
        await one.share(["report"])
        await two.share(["report"])
        await one.share(["report"])  # reads what the other merged
        assert sorted(one.samples("report")) == sorted(two.samples("report"))
        assert len(one.samples("report")) == 12

        runs: dict[str, Run] = {}
        hedging = Hedging(
            app.broker, app.coordination, clock, worker_id="w1", runs=runs, period_s=1
        )
        assert hedging.threshold("report", hedge) == 100.0  # nothing known yet: `after`
        await hedging.run_times.share(["report"])
        assert hedging.threshold("report", hedge) == 15.0  # p90 of 1..6, 11..16
        assert hedging.threshold("report", Hedge(percentile=90, min_samples=13)) is None


async def test_done_runs_count_and_others_do_not(app: QueueTasks, clock: FakeClock) -> None:
    @app.task(hedge=Hedge(percentile=50, min_samples=1))
    async def slow() -> None: ...

    runs: dict[str, Run] = {}
    async with app:
        hedging = Hedging(
            app.broker, app.coordination, clock, worker_id="w1", runs=runs, period_s=1
        )
        for kind, took in [(OutcomeKind.DONE, 2.0), (OutcomeKind.FAILED, 0.1), (None, 0.1)]:
            await slow.add_task()
            run = await _start_run(app, hedging, runs)
            await clock.advance(took)
            outcome = None if kind is None else Outcome(run.task_id, run.token, kind)
            hedging.ended(run, outcome)
        assert hedging.run_times.samples(slow.name) == [2.0]


async def test_two_workers_in_one_app_start_the_hedging_loop(app: QueueTasks) -> None:
    """The worker runs the pass itself (a smoke test of the wiring: no error, no copy for a
    task that is not hedged)."""

    @app.task
    async def quick() -> int:
        return 1

    with anyio.fail_after(10):
        async with app.running():
            assert await (await quick.add_task()).result(timeout=5) == 1
