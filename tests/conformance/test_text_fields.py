"""What a backend cannot store is refused the same way on all of them (issue 14, D7).

PostgreSQL's ``text`` cannot hold a NUL character, so no backend accepts one in a field kept as
text (a queue, a task id, a dedup key, parent and order ids, an idempotency key, a task name):
the producer refuses it with `InvalidOption` (`TaskRegistrationError` for a task name) before
anything is sent, on every backend, and the next good task still goes through.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from taskflow import InvalidOption, QueueTasks, TaskRegistrationError
from taskflow.abc import TaskStatus

_NUL_TEXT = "a\x00b"


@pytest.mark.parametrize(
    "option", ["queue", "task_id", "dedup_key", "parent_id", "order_id", "idempotency_key"]
)
async def test_a_nul_in_a_text_option_is_refused_before_sending(
    backend_url: str, option: str
) -> None:
    app = QueueTasks("nul", broker=backend_url)

    @app.task(name="work")
    async def work() -> str:
        return "ok"

    options: dict[str, Any] = {option: _NUL_TEXT}
    with anyio.fail_after(30):
        async with app:
            with pytest.raises(InvalidOption, match=f"{option} must be .* without NUL"):
                await work.options(**options).add_task()
            with pytest.raises(InvalidOption, match="without NUL"):
                await app.add_task("work", **options)
            handle = await work.options(dedup_key="a b").add_task()
            assert (await handle.info()).status is TaskStatus.QUEUED


def test_a_nul_in_a_task_name_is_refused_at_registration(backend_url: str) -> None:
    app = QueueTasks("nul", broker=backend_url)
    with pytest.raises(TaskRegistrationError, match="without NUL"):

        @app.task(name=_NUL_TEXT)
        async def work() -> None: ...
