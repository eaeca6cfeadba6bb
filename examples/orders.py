"""Orders: buy an article every day for two weeks, on the embedded backend, in a few seconds.

The seed's scenario: a client orders 140 purchases of article A-1234, 10 a day from 1 to 14
December, between 09:00 and 21:00 Moscow time, spread out like real users. The Supervisor
splits the order into 14 daily jobs, starts a TaskManager for each day when it comes, and tells
the client how it went. Time is compressed with `taskflow.testing.FakeClock`: the script jumps
from day to day and waits for the order's own events, printing each day's progress and the
final report.

Run it with `python examples/orders.py`: no server needed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

import anyio

from taskflow import QueueTasks, TaskContext
from taskflow.supervisor import Order, OrderEvent, OrderReport, Plan, Supervisor, day_bounds
from taskflow.testing import FakeClock

clock = FakeClock(dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC).timestamp())
app = QueueTasks(name="shop", clock=clock)
purchases: dict[str, str] = {}  # idempotency key -> receipt: what the marketplace has seen


@app.task(name="shop.buy")
async def buy(ctx: TaskContext, article: str, unit: int) -> str:
    # At-least-once: a unit can run twice (a worker died after buying, before recording it).
    # The idempotency key is the same on every attempt, so a repeat returns the first receipt.
    if ctx.idempotency_key in purchases:
        return purchases[ctx.idempotency_key]
    if unit % 47 == 46:
        raise RuntimeError("the marketplace rejected the card")
    if unit % 13 == 5 and ctx.attempt == 1:
        raise ConnectionError("the marketplace timed out")  # retried, then it succeeds
    purchases[ctx.idempotency_key] = receipt = f"receipt-{unit:03d}"
    return receipt


@app.task(name="shop.order_finished")
async def order_finished(report: dict[str, Any]) -> None:
    # The notifier: in real life an e-mail or a webhook to the client. It runs once per order.
    reports.append(OrderReport.from_payload(report))
    done.set()


reports: list[OrderReport] = []
done = anyio.Event()
supervisor = Supervisor(app, notifier=order_finished, lease_ttl=dt.timedelta(days=2))
supervisor.attach()  # every worker process of this app hosts a Supervisor candidate


async def next_event(order_id: str, wanted: Callable[[OrderEvent], bool], after: str | None) -> str:
    """Follow the order's events until one is `wanted`; return its cursor. While nothing
    happens, move the fake clock a little (retries wait out their backoff)."""
    cursor = after
    while True:
        with anyio.move_on_after(0.05):
            events = supervisor.events(order_id, after=cursor)
            async with contextlib.aclosing(events):
                async for event in events:
                    cursor = event.cursor
                    if wanted(event):
                        return event.cursor
        await clock.advance(5)


async def main() -> None:
    plan = Plan.spread(
        dt.date(2026, 12, 1),
        dt.date(2026, 12, 14),
        per_day=10,
        window=(dt.time(9), dt.time(21)),
        tz="Europe/Moscow",
    )
    order = Order(
        task=buy.name,
        args=["A-1234"],
        unit_kwarg="unit",
        total=140,
        plan=plan,
        retries=2,
        retry_backoff_s=1.0,
        label="buy A-1234, 10 a day for two weeks",
    )
    async with app.running(concurrency=8):
        order_id = await supervisor.submit(order)
        print(f"order {order_id} submitted: {(await supervisor.status(order_id)).summary}")
        cursor: str | None = None
        with anyio.fail_after(60):
            for day in plan.days():
                key = day.isoformat()
                # Jump to 21:00 Moscow time: the day's job became due at midnight and its
                # units (scheduled between 09:00 and 21:00) are all due now.
                await clock.set(day_bounds(plan, day)[1])
                cursor = await next_event(
                    order_id, lambda e, k=key: e.kind == "job_finished" and e.job == k, cursor
                )
                status = await supervisor.status(order_id)
                job = next(j for j in status.jobs if j.key == key)
                print(f"{key}: day {job.state.value:<6} | order: {status.summary}")
            await done.wait()
    [report] = reports
    print(f"final report: {report.state.value}: {report.summary}")
    for failure in report.failures:
        print(f"  unit {failure.index} on {failure.job}: {failure.reason}")


if __name__ == "__main__":
    anyio.run(main)
