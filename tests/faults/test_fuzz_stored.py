"""Hypothesis bytes in place of what PostgreSQL stores: a task's message, and a finished task's
result, error and progress.

Whatever the bytes, a worker fails the damaged task alone as `UndecodableMessage` and goes on
(the good task sent with them runs), and reading a damaged record (`result()`, `info()`)
either works or raises one of taskflow's errors, never a decoder's own exception.
"""

from __future__ import annotations

import secrets
from typing import Any

import anyio
import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from taskflow import GlobalConfig, QueueTasks, TaskflowError, TaskStatus
from taskflow.postgres import app_schema, from_url
from tests.services import postgres_dsn

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.slow]

JUNK = st.lists(st.binary(max_size=48), min_size=1, max_size=12)
SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _app(schema: str) -> QueueTasks:
    app = QueueTasks(
        name="fuzz",
        broker=from_url(postgres_dsn(), schema=schema, app="fuzz"),
        config=GlobalConfig(idle_poll_s=0.2),
    )

    @app.task(name="echo")
    async def echo(value: Any) -> Any:
        return value

    return app


async def _drop(schema: str) -> None:
    conn = await asyncpg.connect(postgres_dsn())
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{app_schema(schema, "fuzz")}" CASCADE')
    finally:
        await conn.close()


async def _set(app: QueueTasks, schema: str, column: str, task_id: str, data: bytes) -> None:
    conn = await asyncpg.connect(postgres_dsn())
    try:
        table = f'"{app_schema(schema, "fuzz")}".tasks'
        await conn.execute(f"UPDATE {table} SET {column} = $1 WHERE id = $2", data, task_id)
    finally:
        await conn.close()


@SETTINGS
@given(junk=JUNK)
def test_damaged_stored_messages_fail_alone_and_the_worker_goes_on(junk: list[bytes]) -> None:
    async def check() -> None:
        schema = f"fz{secrets.token_hex(4)}"
        app = _app(schema)
        try:
            async with app:
                handles = [await app.add_task("echo", [i]) for i in range(len(junk))]
                for handle, data in zip(handles, junk, strict=True):
                    await _set(app, schema, "data", handle.task_id, data)
                good = await app.add_task("echo", ["still works"])
                with anyio.fail_after(60):
                    async with app.running(concurrency=4):
                        assert await good.result(timeout=30) == "still works"
                        for handle in handles:
                            try:
                                await handle.result(timeout=30)
                            except TaskflowError:
                                pass
                            info = await handle.info()
                            assert info.status in (TaskStatus.FAILED, TaskStatus.DONE), info
                            if info.status is TaskStatus.FAILED:
                                assert info.error is not None
                                assert info.error.type == "UndecodableMessage", info.error
        finally:
            await _drop(schema)

    anyio.run(check)


@SETTINGS
@given(junk=JUNK, column=st.sampled_from(["result", "error", "progress"]))
@example(junk=[b"9"], column="error")  # found by this test: msgspec's ValidationError escaped
@example(junk=[b"\x0b\x12B\xed", b""], column="progress")  # and its DecodeError
@example(junk=[b"\xc1"], column="result")
def test_damaged_stored_records_read_or_raise_a_taskflow_error(
    junk: list[bytes], column: str
) -> None:
    async def check() -> None:
        schema = f"fz{secrets.token_hex(4)}"
        app = _app(schema)
        try:
            async with app:
                with anyio.fail_after(60):
                    async with app.running(concurrency=4):
                        handles = [await app.add_task("echo", [i]) for i in range(len(junk))]
                        for handle in handles:
                            await handle.result(timeout=30)
                for handle, data in zip(handles, junk, strict=True):
                    await _set(app, schema, column, handle.task_id, data)
                    for read in (handle.result, handle.info, handle.status):
                        try:
                            await read()
                        except TaskflowError:
                            pass
        finally:
            await _drop(schema)

    anyio.run(check)
