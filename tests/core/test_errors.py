"""The error tree (one root, builtin twins where callers expect a builtin), producer-side errors
that name what was wrong, and the library's manners: it logs through ``taskflow.*`` loggers and
never prints.
"""

from __future__ import annotations

import builtins
import logging
from datetime import UTC, datetime

import anyio
import pytest

import taskflow
from taskflow import (
    EncodeError,
    QueueTasks,
    Retry,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskflowError,
)


def test_every_public_exception_derives_from_the_one_root() -> None:
    exceptions = [
        obj
        for name in taskflow.__all__
        if isinstance(obj := getattr(taskflow, name), type) and issubclass(obj, BaseException)
    ]
    assert len(exceptions) >= 14
    assert all(issubclass(exc, TaskflowError) for exc in exceptions)


@pytest.mark.parametrize(
    ("ours", "builtin"),
    [
        (taskflow.TimeoutError, builtins.TimeoutError),
        (taskflow.ConfigError, ValueError),
        (taskflow.LifecycleError, RuntimeError),
        (taskflow.TaskRegistrationError, ValueError),
        (taskflow.UnknownTaskError, LookupError),
        (taskflow.EncodeError, TypeError),
        (taskflow.TaskNotFound, LookupError),
    ],
)
def test_builtin_twins(ours: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(ours, builtin)
    assert ours is not builtin


def test_cancelled_and_expired_are_task_failures() -> None:
    assert issubclass(TaskCancelled, TaskFailed)
    assert issubclass(TaskExpired, TaskFailed)
    error = TaskFailed("id1", "KeyError", "'k'", "Traceback ...")
    assert (error.task_id, error.error_type, error.error_message) == ("id1", "KeyError", "'k'")
    assert error.remote_traceback == "Traceback ..."
    assert str(error) == "task 'id1' failed: KeyError: 'k'"


def test_retry_carries_its_delay_and_reason() -> None:
    retry = Retry(delay=30, reason="rate limited")
    assert (retry.delay, retry.reason, str(retry)) == (30, "rate limited", "rate limited")
    assert Retry().delay is None


# -- producer-side errors ------------------------------------------------------------------


async def test_an_argument_msgspec_cannot_encode_raises_encode_error_naming_it() -> None:
    app = QueueTasks(name="t")

    @app.task
    async def store(key: str, value: object, *, tags: object = None) -> None:
        pass

    async with app:
        with pytest.raises(EncodeError) as info:
            await store.add_task("k", object())
        assert "argument 'value' (position 1)" in str(info.value)
        assert store.name in str(info.value)
        with pytest.raises(EncodeError, match="argument 'tags'"):
            await store.add_task("k", 1, tags={1, object()})
        with pytest.raises(TypeError):  # EncodeError is a TypeError too
            await store.add_task("k", object())


async def test_encode_error_skips_the_context_parameter_when_naming_arguments() -> None:
    app = QueueTasks(name="t")

    @app.task
    async def store(ctx: taskflow.TaskContext, key: str, value: object) -> None:
        pass

    async with app:
        with pytest.raises(EncodeError, match="argument 'value' \\(position 1\\)"):
            await store.add_task("k", object())


async def test_plain_data_and_datetimes_encode_fine() -> None:
    app = QueueTasks(name="t")

    @app.task
    async def echo(value: object) -> object:
        return value

    when = datetime(2030, 1, 1, tzinfo=UTC)
    with anyio.fail_after(10):
        async with app.running():
            value = {"a": [1, 2.5, "x", None, True], "when": when}
            assert await (await echo.add_task(value)).result(timeout=5) == value


# -- logging, never printing ---------------------------------------------------------------


async def test_logs_go_to_taskflow_loggers_and_nothing_is_printed(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    app = QueueTasks(name="t")

    @app.task(retries=1, retry_backoff=0)
    async def boom() -> None:
        raise ValueError("always")

    with anyio.fail_after(10), caplog.at_level(logging.DEBUG):
        async with app.running():
            with pytest.raises(TaskFailed):
                await (await boom.add_task()).result(timeout=5)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert caplog.records, "a failing task should be logged"
    ours = [r for r in caplog.records if r.name.startswith("taskflow")]
    assert any("failed for good" in r.getMessage() for r in ours)
    assert any("retrying" in r.getMessage() for r in ours)
    assert all(r.name == "taskflow" or r.name.startswith("taskflow.") for r in ours)
    assert not [r for r in caplog.records if r.name == "root"]


def test_the_library_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("taskflow").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
