"""What the producer checks before anything is stored: the arguments bind to the task's
signature, every option obeys its one rule wherever it is given, and `add_tasks` takes prepared
calls only.

All of it happens in the producer, whatever the backend, so these tests use the memory backend;
"nothing was stored" is checked by claiming the queue, or by reading a fixed task id.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskflow import (
    AsyncTask,
    BackendUnavailable,
    CallOptions,
    GlobalConfig,
    InvalidArguments,
    InvalidOption,
    QueueTasks,
    SyncTask,
    TaskContext,
    TaskDefaults,
    TaskExpired,
    TaskflowError,
    TaskFunc,
)
from taskflow._options import TaskOptions
from taskflow._task import argument_check
from taskflow.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> QueueTasks:
    return QueueTasks(name="t", clock=clock, config=GlobalConfig(environ={}))


def define_add(app: QueueTasks) -> TaskFunc[[int, int], int]:
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    return add


async def nothing_queued(app: QueueTasks) -> bool:
    claimed = await app.broker.claim(
        ["default"], limit=100, lease_s=30, now=app.clock.time(), worker_id="probe"
    )
    return claimed == []


# -- arguments are bound when the task is sent ---------------------------------------------------

BAD_CALLS = [
    ((1,), {}, "missing a required argument: 'b'"),
    ((1, 2), {"z": 3}, "unexpected keyword argument 'z'"),
    ((1, 2, 3), {}, "too many positional arguments"),
    ((1,), {"a": 2}, "multiple values for argument 'a'"),
]


@pytest.mark.parametrize(("args", "kwargs", "problem"), BAD_CALLS)
async def test_a_typed_call_that_does_not_bind_fails_before_anything_is_stored(
    app: QueueTasks, args: tuple[Any, ...], kwargs: dict[str, Any], problem: str
) -> None:
    add = define_add(app)
    async with app:
        with pytest.raises(InvalidArguments, match=problem) as info:
            await add.add_task(*args, **kwargs)
        assert "task 'add' takes (a, b)" in str(info.value)
        with pytest.raises(InvalidArguments, match=problem):
            await add.options(task_id="fixed").add_task(*args, **kwargs)
        with pytest.raises(InvalidArguments, match=problem):
            add.prepare(*args, **kwargs)
        with pytest.raises(InvalidArguments, match=problem):
            add.options(priority=1).prepare(*args, **kwargs)
        assert await nothing_queued(app)
        assert await app.get("fixed") is None


def test_invalid_arguments_is_a_taskflow_error_and_a_type_error() -> None:
    assert issubclass(InvalidArguments, TaskflowError)
    assert issubclass(InvalidArguments, TypeError)


@pytest.mark.parametrize(("args", "kwargs", "problem"), BAD_CALLS)
async def test_a_call_by_name_binds_where_the_task_is_registered(
    app: QueueTasks, args: tuple[Any, ...], kwargs: dict[str, Any], problem: str
) -> None:
    define_add(app)
    async with app:
        with pytest.raises(InvalidArguments, match=problem):
            await app.add_task("add", args, kwargs, task_id="by-app")
        with pytest.raises(InvalidArguments, match=problem):
            await AsyncTask(app).add_task("add", args, kwargs, task_id="by-async-task")
        assert await nothing_queued(app)
        assert await app.get("by-app") is None and await app.get("by-async-task") is None


def test_sync_task_binds_too() -> None:
    app = QueueTasks(name="t", config=GlobalConfig(environ={}))
    define_add(app)
    with app.run_in_thread(), pytest.raises(InvalidArguments, match="missing"):
        SyncTask(app).add_task("add", args=(1,))


async def test_the_context_parameter_is_not_the_callers(app: QueueTasks) -> None:
    @app.task(name="greet")
    async def greet(ctx: TaskContext, name: str) -> str:
        return f"hello {name} ({ctx.attempt})"

    @app.task(name="between")
    def between(a: int, ctx: TaskContext, b: int = 10) -> int:
        return a + b + ctx.attempt

    @app.task(name="keyword")
    async def keyword(ctx: TaskContext, *, key: str) -> str:
        return key

    async with app.running():
        with pytest.raises(InvalidArguments, match=r"missing a required argument: 'name'") as info:
            await greet.add_task()  # type: ignore[call-arg]
        assert "takes (name) (ctx, its TaskContext, is passed by the worker)" in str(info.value)
        with pytest.raises(InvalidArguments, match="too many positional"):
            await greet.add_task("ada", "extra")  # type: ignore[call-arg]
        with anyio.fail_after(10):
            assert await (await greet.add_task("ada")).result(timeout=5) == "hello ada (1)"
            assert await (await between.add_task(1, 2)).result(timeout=5) == 4
            assert await (await between.add_task(1)).result(timeout=5) == 12
            assert await (await between.add_task(a=1, b=2)).result(timeout=5) == 4
            assert await (await keyword.add_task(key="k")).result(timeout=5) == "k"
        with pytest.raises(InvalidArguments, match="missing a required argument: 'key'"):
            await keyword.add_task()  # type: ignore[call-arg]


# The fast check (plain signatures) must agree with inspect.Signature.bind on every call: it may
# only pass calls bind accepts, and must refuse (through bind) every call bind refuses.


def _plain(required: int, optional: int) -> inspect.Signature:
    params = [
        inspect.Parameter(f"p{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(required)
    ] + [
        inspect.Parameter(f"p{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
        for i in range(required, required + optional)
    ]
    return inspect.Signature(params)


@given(
    required=st.integers(0, 4),
    optional=st.integers(0, 3),
    positional=st.integers(0, 8),
    keywords=st.sets(st.sampled_from(["p0", "p1", "p2", "p3", "p4", "p5", "p6", "other"])),
)
def test_the_fast_check_agrees_with_signature_bind(
    required: int, optional: int, positional: int, keywords: set[str]
) -> None:
    signature = _plain(required, optional)
    args = tuple(range(positional))
    kwargs = dict.fromkeys(keywords, 0)
    try:
        signature.bind(*args, **kwargs)
        binds = True
    except TypeError:
        binds = False
    check = argument_check("t", signature)
    if binds:
        check(args, kwargs)
    else:
        with pytest.raises(InvalidArguments):
            check(args, kwargs)


def test_signatures_the_fast_check_does_not_cover_go_to_bind() -> None:
    def odd(a: int, /, b: int, *rest: int, c: int, d: int = 1, **more: int) -> None: ...

    check = argument_check("odd", inspect.signature(odd))
    check((1, 2, 3, 4), {"c": 1, "e": 5})
    check((1,), {"b": 2, "c": 3})
    with pytest.raises(InvalidArguments, match="missing a required argument: 'c'"):
        check((1, 2), {})
    with pytest.raises(InvalidArguments):
        check((), {"a": 1, "b": 2, "c": 3})  # a is positional-only


# -- one option schema, one rule per option, wherever it is given --------------------------------

BAD_OPTIONS: list[tuple[str, Any, str]] = [
    ("priority", "high", "priority must be an integer"),
    ("priority", True, "priority must be an integer"),
    ("priority", 2**40, "priority must be an integer from -2\\*\\*31"),
    ("retries", -1, "retries must be an integer >= 0"),
    ("retries", 1.5, "retries must be an integer >= 0"),
    ("retry_backoff", None, "retry_backoff must be seconds >= 0"),
    ("timeout", 0, "timeout must be seconds > 0"),
    ("timeout", "soon", "timeout must be seconds > 0"),
    ("expires", -5, "expires must be a duration"),
    ("expires", datetime(2030, 1, 1), "expires must be a duration"),
    ("queue", "", "queue must be a non-empty string"),
    ("store_result", "no", "store_result must be True or False"),
]
PER_CALL_ONLY: list[tuple[str, Any, str]] = [
    ("headers", {"attempt": 5}, "headers must be a dict of str to str"),
    ("headers", {1: "x"}, "headers must be a dict of str to str"),
    ("headers", "trace=1", "headers must be a dict of str to str"),
    ("delay", -1, "delay must be seconds >= 0"),
    ("delay", "5s", "delay must be seconds >= 0"),
    ("delay", float("nan"), "delay must be seconds >= 0"),
    ("eta", datetime(2030, 1, 1), "not a naive datetime"),
    ("eta", "tomorrow", "eta must be an aware datetime"),
    ("task_id", "", "task_id must be a non-empty string"),
    ("dedup_ttl", timedelta(seconds=-1), "dedup_ttl must be seconds >= 0"),
    ("idempotency_key", 42, "idempotency_key must be a non-empty string"),
]

Send = Callable[[QueueTasks, TaskFunc[[int, int], int], dict[str, Any]], Awaitable[Any]]


async def _via_options(app: QueueTasks, add: TaskFunc[[int, int], int], o: dict[str, Any]) -> Any:
    return await add.options(**o).add_task(1, 2)


async def _via_chained(app: QueueTasks, add: TaskFunc[[int, int], int], o: dict[str, Any]) -> Any:
    return await add.options(priority=1).options(**o).add_task(1, 2)


async def _via_app(app: QueueTasks, add: TaskFunc[[int, int], int], o: dict[str, Any]) -> Any:
    return await app.add_task("add", (1, 2), **o)


async def _via_async_task(
    app: QueueTasks, add: TaskFunc[[int, int], int], o: dict[str, Any]
) -> Any:
    return await AsyncTask(app).add_task("add", (1, 2), **o)


async def _via_decorator(app: QueueTasks, add: TaskFunc[[int, int], int], o: dict[str, Any]) -> Any:
    async def other(a: int, b: int) -> int:
        return a + b

    return app.task(name="other", **o)(other)


PER_CALL_ENTRY_POINTS = [_via_options, _via_chained, _via_app, _via_async_task]


@pytest.mark.parametrize("send", [*PER_CALL_ENTRY_POINTS, _via_decorator])
@pytest.mark.parametrize(("option", "value", "rule"), BAD_OPTIONS)
async def test_a_task_default_breaking_its_rule_is_refused_wherever_it_is_given(
    app: QueueTasks, send: Send, option: str, value: Any, rule: str
) -> None:
    add = define_add(app)
    async with app:
        with pytest.raises(InvalidOption, match=rule):
            await send(app, add, {option: value})
        assert await nothing_queued(app)


@pytest.mark.parametrize("send", PER_CALL_ENTRY_POINTS)
@pytest.mark.parametrize(("option", "value", "rule"), PER_CALL_ONLY)
async def test_a_per_call_option_breaking_its_rule_is_refused_wherever_it_is_given(
    app: QueueTasks, send: Send, option: str, value: Any, rule: str
) -> None:
    add = define_add(app)
    async with app:
        with pytest.raises(InvalidOption, match=rule):
            await send(app, add, {option: value})
        assert await nothing_queued(app)


def test_sync_task_checks_options_by_the_same_rules() -> None:
    app = QueueTasks(name="t", config=GlobalConfig(environ={}))
    define_add(app)
    with app.run_in_thread(), pytest.raises(InvalidOption, match="priority must be an integer"):
        SyncTask(app).add_task("add", args=(1, 2), priority="high")  # type: ignore[typeddict-item]


def test_invalid_option_is_a_taskflow_error_a_value_error_and_a_type_error() -> None:
    assert issubclass(InvalidOption, TaskflowError)
    assert issubclass(InvalidOption, ValueError)
    assert issubclass(InvalidOption, TypeError)  # as wrong types were before


@pytest.mark.parametrize("send", [*PER_CALL_ENTRY_POINTS, _via_decorator])
async def test_a_misspelt_option_names_the_one_meant(app: QueueTasks, send: Send) -> None:
    add = define_add(app)
    async with app:
        with pytest.raises(
            InvalidOption, match=r"unknown option 'prority' \(did you mean 'priority'"
        ):
            await send(app, add, {"prority": 5})


async def test_the_decorator_refuses_per_call_options_saying_where_they_go(
    app: QueueTasks,
) -> None:
    with pytest.raises(InvalidOption, match=r"delay is an option of one call.*options\(delay="):
        await _via_decorator(app, define_add(app), {"delay": 5})


def test_one_schema_every_entry_point_takes_it() -> None:
    fields = {f.name for f in dataclasses.fields(TaskOptions)}
    assert fields == set(typing.get_type_hints(CallOptions))
    assert set(typing.get_type_hints(TaskDefaults)) < fields
    for entry in (
        TaskFunc.options,
        AsyncTask.add_task,
        SyncTask.add_task,
        QueueTasks.add_task,
        QueueTasks.task,
    ):
        variadic = [
            p
            for p in inspect.signature(entry).parameters.values()
            if p.kind is inspect.Parameter.VAR_KEYWORD
        ]
        assert len(variadic) == 1, entry
        expected = "TaskDefaults" if entry is QueueTasks.task else "CallOptions"
        assert variadic[0].annotation == f"Unpack[{expected}]", entry


async def test_async_task_takes_a_connection_like_every_entry_point(app: QueueTasks) -> None:
    define_add(app)
    async with app:
        # The memory backend cannot enlist in a caller's transaction: the option arrived.
        with pytest.raises(BackendUnavailable, match="PostgreSQL"):
            await AsyncTask(app).add_task("add", (1, 2), connection=object())


async def test_headers_that_are_strings_arrive(app: QueueTasks) -> None:
    add = define_add(app)
    async with app:
        handle = await add.options(headers={"trace": "abc"}).add_task(1, 2)
        record = await app.get(handle.task_id)
    assert record is not None


# -- expires: a number is a duration, a point in time is an aware datetime -------------------


async def test_expires_is_a_duration_whatever_the_number(app: QueueTasks, clock: FakeClock) -> None:
    add = define_add(app)
    now = clock.time()  # 1_700_000_000: read as an epoch, this task would expire at once
    async with app:
        big = await add.options(expires=now).add_task(1, 2)
        later = await add.options(expires=datetime.fromtimestamp(now + 60, UTC)).add_task(2, 2)
        gone = await add.options(expires=datetime.fromtimestamp(now - 1, UTC)).add_task(3, 3)
        with anyio.fail_after(10):
            async with app.running():
                assert await big.result(timeout=5) == 3
                assert await later.result(timeout=5) == 4
                with pytest.raises(TaskExpired):
                    await gone.result(timeout=5)


async def test_decorator_expires_takes_the_same_forms(app: QueueTasks, clock: FakeClock) -> None:
    @app.task(name="long", expires=clock.time())
    async def long() -> str:
        return "ran"

    @app.task(name="until", expires=datetime.fromtimestamp(clock.time() - 1, UTC))
    async def until() -> str:
        return "ran"

    with anyio.fail_after(10):
        async with app.running():
            assert await (await long.add_task()).result(timeout=5) == "ran"
            with pytest.raises(TaskExpired):
                await (await until.add_task()).result(timeout=5)


# -- chained options: the later one wins, delay and eta included -------------------------------


async def test_a_later_eta_replaces_an_earlier_delay_and_back(
    app: QueueTasks, clock: FakeClock
) -> None:
    add = define_add(app)
    now = clock.time()
    async with app:
        by_eta = await add.options(delay=5).options(eta=now + 100).add_task(1, 2)
        by_delay = await add.options(eta=now + 100).options(delay=5).add_task(1, 2)
        eta_record = await app.get(by_eta.task_id)
        delay_record = await app.get(by_delay.task_id)
    assert eta_record is not None and eta_record.eta == now + 100
    assert delay_record is not None and delay_record.eta == now + 5


async def test_delay_and_eta_in_one_call_are_refused(app: QueueTasks, clock: FakeClock) -> None:
    add = define_add(app)
    with pytest.raises(InvalidOption, match="either delay= or eta="):
        add.options(delay=5, eta=clock.time() + 5)


# -- add_tasks takes prepared calls ----------------------------------------------------------------


@pytest.mark.parametrize(
    "calls",
    [
        [{"name": "add", "args": [1, 2]}],
        [("add", (1, 2))],
        "add",
        42,
    ],
)
async def test_add_tasks_given_anything_but_prepared_calls_says_what_it_takes(
    app: QueueTasks, calls: Any
) -> None:
    add = define_add(app)
    async with app:
        with pytest.raises(InvalidArguments, match=r"add_tasks takes .*prepare\(") as info:
            await app.add_tasks([add.prepare(1, 2), *calls] if isinstance(calls, list) else calls)
        assert isinstance(info.value, TypeError)
        assert await nothing_queued(app)


async def test_add_tasks_given_one_prepared_call_asks_for_a_list(app: QueueTasks) -> None:
    add = define_add(app)
    async with app:
        with pytest.raises(InvalidArguments, match="a list of prepared calls, not one"):
            await app.add_tasks(add.prepare(1, 2))  # type: ignore[arg-type]


async def test_add_tasks_takes_any_iterable_of_prepared_calls(app: QueueTasks) -> None:
    add = define_add(app)
    async with app:
        handles = await app.add_tasks(add.prepare(i, i) for i in range(3))  # type: ignore[arg-type]
    assert len(handles) == 3
