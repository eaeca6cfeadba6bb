"""Foreign bytes where a task's payload should be: the worker fails that task, says why, and
goes on, on every backend.

A producer in another language, an older taskflow or a damaged store can put anything in a
message's payload. Each case below is sent through the contract (`Broker.enqueue`) with junk
for a payload, seeded random bytes among them; a worker must fail each one alone as
`UndecodablePayload` (once: retrying cannot help), never crash, never hang, and run the good
task sent after them.
"""

from __future__ import annotations

import random
from typing import Any

import anyio
import msgspec
import pytest

from taskflow import GlobalConfig, QueueTasks, TaskFailed
from taskflow.abc import Broker, TaskStatus, encode_value
from taskflow.testing import FakeClock
from tests.conformance._helpers import message

_rng = random.Random(20261204)
JUNK: dict[str, bytes] = {
    "empty": b"",
    "never used byte": b"\xc1",
    "truncated": encode_value([[1, 2, 3], {"a": "b"}])[:-3],
    "an integer": msgspec.msgpack.encode(7),
    "a map": msgspec.msgpack.encode({"args": [1]}),
    "a one-item array": msgspec.msgpack.encode([[1]]),
    "kwargs not a map": msgspec.msgpack.encode([[1], [2]]),
    "a string longer than the data": b"\xdb\xff\xff\xff\xff",
    "nested past the recursion limit": b"\x91" * 20_000 + b"\x01",
    **{f"random {i}": _rng.randbytes(_rng.randint(1, 64)) for i in range(8)},
}


@pytest.mark.timeout(120)
async def test_junk_payloads_fail_alone_as_undecodable_and_the_worker_goes_on(
    backend: Broker, clock: FakeClock
) -> None:
    app = QueueTasks("wire", broker=backend, clock=clock, config=GlobalConfig(idle_poll_s=1000))

    @app.task(name="echo", retries=3)
    async def echo(value: Any) -> Any:
        return value

    with anyio.fail_after(60):
        async with app, app.running(concurrency=4):
            junk = [message(backend, name="echo", payload=data) for data in JUNK.values()]
            results = await backend.enqueue(junk, now=clock.time())
            good = await echo.add_task("still works")
            assert await good.result(timeout=30) == "still works"
            for case, result in zip(JUNK, results, strict=True):
                handle = app.result(result.task_id)
                with pytest.raises(TaskFailed) as failed:
                    await handle.result(timeout=30)
                assert failed.value.error_type == "UndecodablePayload", case
                info = await handle.info()
                assert (info.status, info.attempts) == (TaskStatus.FAILED, 1), case
