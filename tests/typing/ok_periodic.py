"""mypy must accept this: ``@app.periodic`` above ``@app.task`` keeps the task's type, so the
task can still be sent by hand with checked arguments, and the schedule API is typed.

Never run; only type-checked by ``tests/typing/check_typing.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import assert_type

from taskflow import AsyncResult, QueueTasks, ScheduleInfo

app = QueueTasks(name="typing")


@app.periodic(cron="*/5 * * * *", tz="Europe/Moscow", args=(3,))
@app.periodic(every=timedelta(milliseconds=500), name="fast", args=(1,), catch_up=2)
@app.task
async def beat(n: int) -> str:
    return str(n)


async def use() -> None:
    assert_type(await beat.add_task(5), AsyncResult[str])
    infos = await app.schedules()
    assert_type(infos, list[ScheduleInfo])
    assert_type(infos[0].next_slot, datetime | None)
    await app.pause_schedule("fast")
    await app.resume_schedule("fast")
