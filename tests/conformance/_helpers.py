"""Small builders shared by the conformance tests (messages, outcomes, claims)."""

from __future__ import annotations

from typing import Any

from taskflow.abc import (
    Broker,
    Delivery,
    ErrorInfo,
    Outcome,
    OutcomeKind,
    TaskMessage,
    encode_value,
)
from taskflow.testing import FakeClock

PAYLOAD = encode_value([[], {}])
LEASE_S = 30.0
TTL_S = 3600.0


def message(broker: Broker, queue: str = "default", **options: Any) -> TaskMessage:
    """A message for `queue` with a fresh id from the broker; `options` set other fields."""
    task_id = options.pop("id", None) or broker.new_task_id(queue)
    options.setdefault("name", "tests.task")
    options.setdefault("payload", PAYLOAD)
    return TaskMessage(id=task_id, queue=queue, **options)


async def enqueue_one(
    broker: Broker, clock: FakeClock, queue: str = "default", **options: Any
) -> str:
    """Enqueue one new message and return its task id."""
    msg = message(broker, queue, **options)
    [result] = await broker.enqueue([msg], now=clock.time())
    assert result.created, result
    return result.task_id


async def claim(
    broker: Broker,
    clock: FakeClock,
    queues: tuple[str, ...] = ("default",),
    *,
    limit: int = 100,
    lease_s: float = LEASE_S,
    worker_id: str = "w1",
) -> list[Delivery]:
    """Claim from `queues` at the clock's time."""
    return await broker.claim(
        list(queues), limit=limit, lease_s=lease_s, now=clock.time(), worker_id=worker_id
    )


def done(delivery: Delivery, clock: FakeClock, value: Any = "ok") -> Outcome:
    """A DONE outcome for `delivery` whose result lives `TTL_S` seconds."""
    return Outcome(
        delivery.task_id,
        delivery.token,
        OutcomeKind.DONE,
        result=encode_value(value),
        result_expires_at=clock.time() + TTL_S,
    )


def failed(delivery: Delivery, clock: FakeClock, error_type: str = "ValueError") -> Outcome:
    """A FAILED (dead-letter) outcome for `delivery`."""
    return Outcome(
        delivery.task_id,
        delivery.token,
        OutcomeKind.FAILED,
        error=ErrorInfo(error_type, "boom", "Traceback ..."),
        result_expires_at=clock.time() + TTL_S,
    )


def retry(delivery: Delivery, retry_at: float | None) -> Outcome:
    """A RETRY outcome for `delivery`, due at `retry_at`."""
    return Outcome(
        delivery.task_id,
        delivery.token,
        OutcomeKind.RETRY,
        error=ErrorInfo("ValueError", "try again"),
        retry_at=retry_at,
    )


def release(delivery: Delivery, retry_at: float | None = None) -> Outcome:
    """A RELEASE outcome for `delivery` (attempt refunded)."""
    return Outcome(delivery.task_id, delivery.token, OutcomeKind.RELEASE, retry_at=retry_at)
