"""Fuzzed producer input: arguments, options and names that a program might pass by mistake.

Whatever is passed, the producer either accepts it (and then the task runs and its result comes
back as sent, msgpack-normalised) or refuses it with one of taskflow's errors
(`TaskflowError`), never a stray `TypeError`, `OverflowError` or a dead worker; and the next good
task still runs. Memory backend, a worker in a thread of this process.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from taskflow import QueueTasks, TaskflowError

pytestmark = [pytest.mark.faults]

app = QueueTasks(name="fuzz")


@app.task
def echo(value: Any) -> Any:
    return value


@pytest.fixture(scope="module", autouse=True)
def worker() -> Iterator[None]:
    with app.run_in_thread():
        yield


def _plain(value: Any) -> Any:
    """What a value looks like after a msgpack round trip (tuples and sets come back as lists,
    a set in its iteration order)."""
    if isinstance(value, tuple | list | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
)
ODD = st.sampled_from([object(), {1, 2}, 1j, Ellipsis, float("nan"), 2**70, -(2**64)])
VALUES = st.recursive(
    SCALARS | ODD,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=5)
    ),
    max_leaves=25,
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@SETTINGS
@given(value=VALUES)
@example(value={1, 2})  # found by this test: a set is sent (and comes back as a list)
@example(value=[[[[[[[[[[1]]]]]]]]]])
def test_an_argument_comes_back_as_sent_or_is_refused_with_a_taskflow_error(value: Any) -> None:
    try:
        handle = echo.add_task_sync(value)
    except TaskflowError:
        return  # refused clearly, at the producer
    try:
        result = handle.result(timeout=10)
    except TaskflowError:
        return  # refused clearly, as the task's outcome (an unencodable result)
    assert _same(result, _plain(value))


OPTION_VALUES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=4)
    | st.just(timedelta(seconds=-1))
    | st.just(timedelta(days=100_000))
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.text(max_size=3) | st.integers(), max_size=2)
)
OPTION_NAMES = st.sampled_from(
    [
        "queue",
        "priority",
        "retries",
        "retry_backoff",
        "timeout",
        "expires",
        "store_result",
        "delay",
        "eta",
        "task_id",
        "dedup_key",
        "dedup_ttl",
        "parent_id",
        "order_id",
        "headers",
        "idempotency_key",
        "no_such_option",
    ]
)


@SETTINGS
@given(options=st.dictionaries(OPTION_NAMES, OPTION_VALUES, max_size=3))
def test_any_options_are_taken_or_refused_with_a_taskflow_error(options: dict[str, Any]) -> None:
    try:
        echo.options(**options).add_task_sync("x")
    except TaskflowError:
        pass
    assert echo.add_task_sync("still works").result(timeout=10) == "still works"


@SETTINGS
@given(name=st.text(max_size=30) | st.integers() | st.none() | st.binary(max_size=5))
@example(name=1)  # found by this test: a TypeError from `in` before
def test_any_task_name_is_registered_or_refused_with_a_taskflow_error(name: Any) -> None:
    other = QueueTasks(name="fuzz-names")
    try:
        other.task(name=name)(lambda: None)
    except TaskflowError:
        pass


@SETTINGS
@given(
    url=st.text(max_size=40)
    | st.from_regex(r"(redis|rediss|postgresql|memory|x)://(u:secret@)?[^\s]{0,30}", fullmatch=True)
)
@example(url="redis://[")  # found by this test: urllib's ValueError before
@example(url="postgresql://u:secret@[")
@example(url="foo://u:secret@host")
@example(url="://:secret@")  # found by this test: no scheme, so urllib saw no password
@example(url="#://:secret@")
def test_any_broker_url_is_taken_or_refused_with_a_taskflow_error(url: str) -> None:
    try:
        QueueTasks(name="fuzz-urls", broker=url)
    except TaskflowError as exc:
        if "://" in url and ":secret@" in url:
            assert "secret" not in str(exc), "a password in an error message"
