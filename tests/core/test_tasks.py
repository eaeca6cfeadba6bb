"""`@app.task` and what a task does end to end: the four function kinds, decorator options,
typed handles and per-call options, dedup and explicit ids, name-based and batch sending,
priorities, delays, retries with backoff, dead letters, expiry and fire-and-forget tasks.

All on the memory backend; time that matters runs on a `FakeClock`, moved in small steps.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import anyio
import pytest

import taskflow._outcome
from taskflow import (
    AsyncResult,
    AsyncTask,
    BackendUnavailable,
    GlobalConfig,
    InvalidOption,
    QueueTasks,
    Retry,
    TaskContext,
    TaskExpired,
    TaskFailed,
    TaskRegistrationError,
    TaskStatus,
    UnknownTaskError,
)
from taskflow.testing import FakeClock


async def step(clock: FakeClock, seconds: float, every: float = 5.0) -> None:
    """Move fake time forward in small steps, letting the worker act after each one."""
    await anyio.wait_all_tasks_blocked()
    moved = 0.0
    while moved < seconds - 1e-9:
        delta = min(every, seconds - moved)
        await clock.advance(delta)
        await anyio.wait_all_tasks_blocked()
        moved += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> QueueTasks:
    # A long idle poll: an idle worker sleeps until the next due time, not in 1 s ticks.
    config = GlobalConfig(lease_s=30, heartbeat_s=10, idle_poll_s=1000)
    return QueueTasks(name="t", clock=clock, config=config)


# -- the four kinds of functions -----------------------------------------------------------


async def test_async_task_runs_on_the_loop(app: QueueTasks) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    assert add.definition.kind == "async"
    with anyio.fail_after(10):
        async with app.running():
            handle = await add.add_task(2, 3)
            assert isinstance(handle, AsyncResult)
            assert await handle.result(timeout=5) == 5


async def test_sync_task_runs_in_a_thread_not_on_the_loop_thread(app: QueueTasks) -> None:
    @app.task
    def where(x: int) -> tuple[int, int]:
        return x, threading.get_ident()

    assert where.definition.kind == "sync"
    with anyio.fail_after(10):
        async with app.running():
            x, ident = await (await where.add_task(7)).result(timeout=5)
    assert x == 7
    assert ident != threading.get_ident()


async def test_generator_task_yields_are_visible_while_it_runs(app: QueueTasks) -> None:
    first_out = threading.Event()
    go_on = threading.Event()

    @app.task
    def count(n: int) -> Iterator[int]:
        yield 1
        first_out.set()
        go_on.wait(10)
        yield from range(2, n + 1)

    assert count.definition.kind == "generator"
    with anyio.fail_after(10):
        async with app.running():
            handle = await count.add_task(3)
            # set after the worker took the first value and asked for the next one
            await anyio.to_thread.run_sync(first_out.wait, 10)
            await anyio.wait_all_tasks_blocked()  # the worker's next report batch
            info = await handle.info()
            assert info.status is TaskStatus.RUNNING
            assert info.yields == [1]
            go_on.set()
            assert await handle.result(timeout=5) == [1, 2, 3]


async def test_async_generator_task_yields_are_visible_while_it_runs(app: QueueTasks) -> None:
    go_on = anyio.Event()

    @app.task
    async def count(n: int) -> AsyncIterator[int]:
        yield 1
        yield 2
        await go_on.wait()
        for i in range(3, n + 1):
            yield i

    assert count.definition.kind == "async_generator"
    with anyio.fail_after(10):
        async with app.running():
            handle = await count.add_task(4)
            await anyio.wait_all_tasks_blocked()
            info = await handle.info()
            assert info.status is TaskStatus.RUNNING
            assert info.yields == [1, 2]
            go_on.set()
            assert await handle.result(timeout=5) == [1, 2, 3, 4]


async def test_a_retried_generator_shows_only_the_current_attempts_yields(
    app: QueueTasks,
) -> None:
    @app.task(retries=1, retry_backoff=0)
    async def count(ctx: TaskContext) -> AsyncIterator[int]:
        yield 1
        if ctx.attempt == 1:
            raise ConnectionError("blink")
        yield 2

    with anyio.fail_after(10):
        async with app.running():
            handle = await count.add_task()
            assert await handle.result(timeout=5) == [1, 2]
            assert (await handle.info()).yields == [1, 2]


# -- registration --------------------------------------------------------------------------


def test_decorator_options_are_recorded(app: QueueTasks) -> None:
    @app.task(
        name="custom",
        retries=4,
        retry_backoff=timedelta(seconds=3),
        timeout=7,
        priority=5,
        queue="q1",
    )
    async def fn() -> None:
        pass

    d = fn.definition
    assert fn.name == "custom" and "custom" in app.tasks
    assert (d.retries, d.retry_backoff_s, d.timeout_s) == (4, 3.0, 7.0)
    assert (d.priority, d.queue) == (5, "q1")


async def test_decorator_options_reach_the_message(app: QueueTasks) -> None:
    @app.task(name="custom", retries=4, retry_backoff=3, timeout=7, priority=5, queue="q1")
    async def fn() -> None:
        pass

    async with app:
        handle = await fn.add_task()
        record = await app.get(handle.task_id)
    assert record is not None
    assert (record.name, record.queue, record.priority, record.retries) == ("custom", "q1", 5, 4)


def test_default_name_is_the_qualified_name_without_locals(app: QueueTasks) -> None:
    @app.task
    async def plain() -> None:
        pass

    assert plain.name == "test_default_name_is_the_qualified_name_without_locals.plain"


def test_duplicate_task_name_is_refused(app: QueueTasks) -> None:
    @app.task(name="same")
    async def one() -> None:
        pass

    with pytest.raises(TaskRegistrationError, match="'same' is already registered"):

        @app.task(name="same")
        async def two() -> None:
            pass


def test_non_callable_is_refused(app: QueueTasks) -> None:
    with pytest.raises(TaskRegistrationError, match="needs a function"):
        app.task(42)  # type: ignore[call-overload]


def test_negative_retries_are_refused(app: QueueTasks) -> None:
    with pytest.raises(InvalidOption, match="retries must be an integer >= 0"):

        @app.task(retries=-1)
        async def fn() -> None:
            pass


def test_retry_on_takes_exception_classes_only(app: QueueTasks) -> None:
    with pytest.raises(InvalidOption, match="retry_on takes exception classes"):

        @app.task(retry_on=[ValueError, "oops"])  # type: ignore[list-item]
        async def fn() -> None:
            pass


@pytest.mark.parametrize(
    ("option", "value"),
    [("timeout", -1), ("retry_backoff", -2), ("retries", "3"), ("timeout", "soon")],
)
def test_bad_decorator_options_are_invalid_options_naming_the_task(
    app: QueueTasks, option: str, value: object
) -> None:
    async def fn() -> None:
        pass

    with pytest.raises(InvalidOption, match=rf"task '\S*fn': {option} must be"):
        app.task(**{option: value})(fn)  # type: ignore[call-overload]


async def test_partials_and_callable_objects_need_a_name_and_then_run(app: QueueTasks) -> None:
    def scale(factor: int, x: int) -> int:
        return factor * x

    class Doubler:
        def __call__(self, x: int) -> int:
            return 2 * x

    with pytest.raises(TaskRegistrationError, match=r"name=\.\.\."):
        app.task(functools.partial(scale, 3))
    with pytest.raises(TaskRegistrationError, match=r"name=\.\.\."):
        app.task(Doubler())
    triple = app.task(name="triple")(functools.partial(scale, 3))
    double = app.task(name="double")(Doubler())
    with anyio.fail_after(10):
        async with app.running():
            assert await (await triple.add_task(5)).result(timeout=5) == 15
            assert await (await double.add_task(5)).result(timeout=5) == 10


def test_calling_the_task_runs_the_function_here(app: QueueTasks) -> None:
    @app.task
    def double(x: int) -> int:
        return 2 * x

    assert double(21) == 42


# -- per-call options ----------------------------------------------------------------------


async def test_options_set_priority_delay_task_id_and_dedup_key(
    app: QueueTasks, clock: FakeClock
) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with app:
        handle = await add.options(
            priority=9, delay=timedelta(seconds=5), task_id="x", dedup_key="k"
        ).add_task(2, 3)
        assert handle.task_id == "x"
        record = await app.get("x")
    assert record is not None
    assert record.priority == 9
    assert record.eta == clock.time() + 5
    assert record.status is TaskStatus.SCHEDULED
    assert record.dedup_key == "k"


async def test_a_parameter_named_timeout_is_an_argument_not_an_option(app: QueueTasks) -> None:
    @app.task
    async def wait_for(timeout: float) -> float:
        return timeout

    with anyio.fail_after(10):
        async with app.running():
            handle = await wait_for.add_task(12.5)
            record = await app.get(handle.task_id)
            assert record is not None
            assert await handle.result(timeout=5) == 12.5
            handle = await wait_for.add_task(timeout=3.0)
            assert await handle.result(timeout=5) == 3.0


async def test_option_timeout_goes_to_the_message_not_the_function(app: QueueTasks) -> None:
    @app.task
    async def wait_for(timeout: float) -> float:
        return timeout

    with anyio.fail_after(10):
        async with app.running():
            handle = await wait_for.options(timeout=60).add_task(1.0)
            assert await handle.result(timeout=5) == 1.0


async def test_dedup_key_returns_the_live_task_then_a_new_one_after_it_ends(
    app: QueueTasks,
) -> None:
    proceed = anyio.Event()

    @app.task
    async def job(n: int) -> int:
        await proceed.wait()
        return n

    with anyio.fail_after(10):
        async with app.running():
            first = await job.options(dedup_key="k").add_task(1)
            again = await job.options(dedup_key="k").add_task(2)
            assert again.task_id == first.task_id
            proceed.set()
            assert await again.result(timeout=5) == 1
            after = await job.options(dedup_key="k").add_task(3)
            assert after.task_id != first.task_id
            assert await after.result(timeout=5) == 3


async def test_dedup_ttl_keeps_the_key_after_the_task_ends(
    app: QueueTasks, clock: FakeClock
) -> None:
    @app.task
    async def job(n: int) -> int:
        return n

    with anyio.fail_after(10):
        async with app.running():
            first = await job.options(dedup_key="k", dedup_ttl=60).add_task(1)
            assert await first.result(timeout=5) == 1
            await clock.advance(30)
            within = await job.options(dedup_key="k", dedup_ttl=60).add_task(2)
            assert within.task_id == first.task_id
            await clock.advance(31)
            later = await job.options(dedup_key="k", dedup_ttl=60).add_task(3)
            assert later.task_id != first.task_id
            assert await later.result(timeout=5) == 3


async def test_dedup_keys_are_scoped_to_their_queue(app: QueueTasks) -> None:
    @app.task
    async def job() -> None:
        pass

    async with app:
        first = await job.options(dedup_key="k", queue="a").add_task()
        other_queue = await job.options(dedup_key="k", queue="b").add_task()
    assert first.task_id != other_queue.task_id


async def test_a_worker_claims_only_its_queues(app: QueueTasks) -> None:
    ran: list[str] = []

    @app.task(queue="emails")
    async def send(to: str) -> None:
        ran.append(to)

    @app.task
    async def default_job() -> None:
        ran.append("default")

    with anyio.fail_after(10):
        async with app:
            on_default = await default_job.add_task()
            email = await send.add_task("ada")
            rerouted = await send.options(queue="default").add_task("bob")
            async with app.running(queues=["default"]):
                await on_default.result(timeout=5)
                await rerouted.result(timeout=5)
                await anyio.wait_all_tasks_blocked()
                assert await email.status() is TaskStatus.QUEUED
            async with app.running(queues=["emails"]):
                await email.result(timeout=5)
    assert sorted(ran[:2]) == ["bob", "default"] and ran[2:] == ["ada"]


async def test_same_task_id_twice_returns_the_first_task(app: QueueTasks) -> None:
    @app.task
    async def job(n: int) -> int:
        return n

    with anyio.fail_after(10):
        async with app.running():
            first = await job.options(task_id="fixed").add_task(1)
            second = await job.options(task_id="fixed").add_task(2)
            assert first.task_id == second.task_id == "fixed"
            assert await second.result(timeout=5) == 1


# -- name-based and batch sending ----------------------------------------------------------


async def test_async_task_by_name(app: QueueTasks) -> None:
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    with anyio.fail_after(10):
        async with app.running():
            handle = await AsyncTask(app).add_task("add", args=(2, 3), kwargs={}, priority=0)
            assert await handle.result(timeout=5) == 5
            handle = await app.add_task("add", args=(1,), kwargs={"b": 4}, priority=3)
            assert await handle.result(timeout=5) == 5
            record = await app.get(handle.task_id)
            assert record is not None and record.priority == 3


async def test_name_based_sending_takes_the_same_options_as_typed_handles(
    app: QueueTasks, clock: FakeClock
) -> None:
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    async with app:
        handle = await AsyncTask(app).add_task(
            "add",
            args=(1, 2),
            priority=4,
            delay=30,
            task_id="named",
            queue="other",
            retries=2,
            retry_backoff=7,
            timeout=9,
            expires=60,
            store_result=False,
        )
        assert handle.task_id == "named"
        record = await app.get("named")
    assert record is not None
    assert (record.priority, record.queue, record.retries) == (4, "other", 2)
    assert record.eta == clock.time() + 30
    assert record.store_result is False


async def test_unknown_task_name_raises_unknown_task_error(app: QueueTasks) -> None:
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    async with app:
        with pytest.raises(UnknownTaskError, match=r"'nope'.*registered: add"):
            await AsyncTask(app).add_task("nope", args=(1, 2))
        with pytest.raises(UnknownTaskError):
            await app.add_task("nope")


async def test_add_tasks_sends_a_batch_in_one_call(app: QueueTasks) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    calls: list[int] = []
    real_enqueue = app.broker.enqueue

    async def counting_enqueue(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return await real_enqueue(*args, **kwargs)  # type: ignore[arg-type]

    app.broker.enqueue = counting_enqueue  # type: ignore[method-assign]
    with anyio.fail_after(10):
        async with app.running():
            handles = await app.add_tasks(
                [add.prepare(1, 2), add.options(priority=5).prepare(3, 4), add.prepare(5, 6)]
            )
            assert calls == [1]
            assert [await h.result(timeout=5) for h in handles] == [3, 7, 11]


# -- priorities and delays -----------------------------------------------------------------


async def test_higher_priority_runs_first(app: QueueTasks) -> None:
    order: list[str] = []

    @app.task
    async def record(label: str) -> None:
        order.append(label)

    with anyio.fail_after(10):
        async with app:
            await record.options(priority=1).add_task("low")
            await record.add_task("default")
            await record.options(priority=9).add_task("urgent")
            last = await record.options(priority=5).add_task("mid")
            async with app.running(concurrency=1):
                await last.result(timeout=5)
                await anyio.wait_all_tasks_blocked()
    assert order == ["urgent", "mid", "low", "default"]


async def test_delayed_task_runs_only_when_its_time_comes(
    app: QueueTasks, clock: FakeClock
) -> None:
    ran_at: list[float] = []

    @app.task
    async def stamp() -> None:
        ran_at.append(clock.time())

    start = clock.time()
    with anyio.fail_after(10):
        async with app.running():
            delayed = await stamp.options(delay=10).add_task()
            at_time = await stamp.options(eta=datetime.fromtimestamp(start + 20, UTC)).add_task()
            await step(clock, 9.5)
            assert ran_at == []
            assert await delayed.status() is TaskStatus.SCHEDULED
            await step(clock, 0.5)
            assert ran_at == [start + 10]
            await step(clock, 10)
            await at_time.result(timeout=5)
    assert ran_at == [start + 10, start + 20]


async def test_delay_and_eta_together_are_refused(app: QueueTasks, clock: FakeClock) -> None:
    @app.task
    async def stamp() -> None:
        pass

    async with app:
        with pytest.raises(ValueError, match="either delay= or eta="):
            await stamp.options(delay=5, eta=clock.time() + 5).add_task()


async def test_a_transaction_handle_needs_a_backend_that_can_enlist(app: QueueTasks) -> None:
    @app.task
    async def stamp() -> None:
        pass

    async with app:
        with pytest.raises(BackendUnavailable, match="PostgreSQL"):
            await stamp.options(connection=object()).add_task()


async def test_naive_eta_is_refused(app: QueueTasks) -> None:
    @app.task
    async def stamp() -> None:
        pass

    async with app:
        with pytest.raises(ValueError, match="naive datetime"):
            await stamp.options(eta=datetime(2030, 1, 1)).add_task()


# -- retries -------------------------------------------------------------------------------


async def test_retries_back_off_exponentially_and_are_not_run_early(
    app: QueueTasks, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(taskflow._outcome.random, "random", lambda: 0.0)  # jitter at its low end
    runs: list[float] = []

    @app.task(retries=3, retry_backoff=4)
    async def flaky() -> str:
        runs.append(clock.time())
        if len(runs) < 4:
            raise ConnectionError("blink")
        return "ok"

    start = clock.time()
    with anyio.fail_after(10):
        async with app.running():
            handle = await flaky.add_task()
            await anyio.wait_all_tasks_blocked()
            assert runs == [start]
            assert await handle.status() is TaskStatus.RETRYING
            # backoff 4 * 2**(n-1) with jitter factor 0.5: waits of 2, 4, 8 seconds
            await step(clock, 1.5)
            assert len(runs) == 1
            await step(clock, 0.5)
            assert len(runs) == 2
            await step(clock, 4)
            assert len(runs) == 3
            await step(clock, 8)
            assert await handle.result(timeout=5) == "ok"
    assert [b - a for a, b in itertools.pairwise(runs)] == [2.0, 4.0, 8.0]


def test_retry_delay_has_jitter_between_half_and_full_backoff_and_a_cap() -> None:
    delays = {taskflow._outcome.retry_delay(10, 2, 600) for _ in range(200)}
    assert all(10 <= d <= 20 for d in delays)
    assert len(delays) > 1  # jittered, not constant
    assert all(d <= 30 for d in (taskflow._outcome.retry_delay(10, 20, 30) for _ in range(50)))


async def test_attempts_never_exceed_retries_plus_one_then_dead_letter_and_requeue(
    app: QueueTasks, clock: FakeClock
) -> None:
    attempts: list[int] = []
    healed = False

    @app.task(retries=2, retry_backoff=1)
    async def broken(ctx: TaskContext) -> str:
        attempts.append(ctx.attempt)
        if not healed:
            raise RuntimeError("still broken")
        return "fixed"

    with anyio.fail_after(10):
        async with app.running():
            handle = await broken.add_task()
            await step(clock, 10)
            with pytest.raises(TaskFailed) as info:
                await handle.result(timeout=5)
            await step(clock, 10)
            assert attempts == [1, 2, 3]
            assert info.value.error_type == "RuntimeError"
            assert (await handle.info()).attempts == 3
            assert await handle.status() is TaskStatus.FAILED
            dead = await app.dead_letters()
            assert [r.id for r in dead] == [handle.task_id]
            healed = True
            (new,) = await app.requeue([handle.task_id])
            assert new is not None and new.task_id != handle.task_id
            assert await new.result(timeout=5) == "fixed"
            record = await app.get(new.task_id)
            assert record is not None and record.requeued_from == handle.task_id
            assert await app.requeue(["unknown-id"]) == [None]


async def test_retry_on_limits_retries_to_those_errors(app: QueueTasks, clock: FakeClock) -> None:
    runs: list[str] = []

    @app.task(retries=3, retry_backoff=0, retry_on=ConnectionError)
    async def fn(kind: str) -> None:
        runs.append(kind)
        raise ConnectionError() if kind == "net" else ValueError()

    with anyio.fail_after(10):
        async with app.running():
            with pytest.raises(TaskFailed, match="ValueError"):
                await (await fn.add_task("value")).result(timeout=5)
            with pytest.raises(TaskFailed, match="ConnectionError"):
                await (await fn.add_task("net")).result(timeout=5)
    assert runs.count("value") == 1
    assert runs.count("net") == 4


async def test_dont_retry_on_dead_letters_at_once(app: QueueTasks) -> None:
    runs: list[str] = []

    @app.task(retries=3, retry_backoff=0, dont_retry_on=[KeyError])
    async def fn(kind: str) -> None:
        runs.append(kind)
        raise KeyError(kind) if kind == "key" else OSError(kind)

    with anyio.fail_after(10):
        async with app.running():
            with pytest.raises(TaskFailed, match="KeyError"):
                await (await fn.add_task("key")).result(timeout=5)
            with pytest.raises(TaskFailed, match="OSError"):
                await (await fn.add_task("os")).result(timeout=5)
    assert runs.count("key") == 1
    assert runs.count("os") == 4


async def test_raise_retry_with_delay_runs_again_after_that_delay(
    app: QueueTasks, clock: FakeClock
) -> None:
    runs: list[float] = []

    @app.task(retries=1)
    async def later() -> str:
        runs.append(clock.time())
        if len(runs) == 1:
            raise Retry(delay=30, reason="not yet")
        return "now"

    with anyio.fail_after(10):
        async with app.running():
            handle = await later.add_task()
            await step(clock, 29.5)
            assert len(runs) == 1
            assert (await handle.info()).error is not None
            await step(clock, 0.5)
            assert await handle.result(timeout=5) == "now"
    assert runs[1] - runs[0] == 30


async def test_retry_past_retries_dead_letters_with_the_retry_error(app: QueueTasks) -> None:
    @app.task(retries=0)
    async def always() -> None:
        raise Retry(delay=0, reason="again please")

    with anyio.fail_after(10):
        async with app.running():
            with pytest.raises(TaskFailed) as info:
                await (await always.add_task()).result(timeout=5)
    assert info.value.error_type == "Retry"
    assert info.value.error_message == "again please"


# -- expiry and fire-and-forget ------------------------------------------------------------


async def test_a_task_not_started_before_it_expires_is_not_run(
    app: QueueTasks, clock: FakeClock
) -> None:
    ran: list[int] = []

    @app.task
    async def job(n: int) -> None:
        ran.append(n)

    with anyio.fail_after(10):
        async with app:
            expiring = await job.options(expires=5).add_task(1)
            fresh = await job.options(expires=timedelta(seconds=60)).add_task(2)
            await clock.advance(10)
            async with app.running():
                with pytest.raises(TaskExpired) as info:
                    await expiring.result(timeout=5)
                await fresh.result(timeout=5)
            assert await expiring.status() is TaskStatus.EXPIRED
    assert info.value.error_type == "TaskExpired"
    assert ran == [2]


async def test_decorator_expires_applies_to_every_call(app: QueueTasks, clock: FakeClock) -> None:
    @app.task(expires=1)
    async def job() -> None:
        pass

    with anyio.fail_after(10):
        async with app:
            handle = await job.options(delay=2).add_task()
            async with app.running():
                await step(clock, 2)
                with pytest.raises(TaskExpired):
                    await handle.result(timeout=5)


async def test_store_result_false_keeps_nothing(app: QueueTasks) -> None:
    @app.task(store_result=False)
    async def fire() -> str:
        return "big value"

    @app.task
    async def keep() -> str:
        return "kept"

    with anyio.fail_after(10):
        async with app.running():
            handle = await fire.add_task()
            assert await handle.result(timeout=5) is None
            record = await app.get(handle.task_id)
            assert record is not None
            assert record.status is TaskStatus.DONE and record.result is None
            per_call = await keep.options(store_result=False).add_task()
            assert await per_call.result(timeout=5) is None
