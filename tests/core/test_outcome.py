"""The outcome decision (`taskflow._outcome`) on its own: how a run ended -> its `Outcome`.

The worker's tests cover the same rules end to end; these pin each branch without a worker.
"""

from __future__ import annotations

import pytest

from taskflow import GlobalConfig, Retry, TaskContext
from taskflow._outcome import OutcomeDecision, is_retryable
from taskflow._run import Run
from taskflow._task import TaskDefinition, make_definition
from taskflow.abc import Delivery, OutcomeKind, TaskMessage
from taskflow.testing import FakeClock

NOW = 1_700_000_000.0


def run_of(attempt: int = 1) -> Run:
    return Run(
        Delivery("t-1", token=7, attempt=attempt, data=b"", lease_expires_at=NOW + 30),
        on_report=lambda run: None,
    )


def message(**fields: object) -> TaskMessage:
    return TaskMessage(id="t-1", name="job", queue="default", payload=b"", **fields)  # type: ignore[arg-type]


def definition(**options: object) -> TaskDefinition:
    async def job() -> None:
        return None

    return make_definition(
        job,
        name="job",
        retry_on=options.pop("retry_on", None),  # type: ignore[arg-type]
        dont_retry_on=options.pop("dont_retry_on", None),  # type: ignore[arg-type]
        defaults=options,
    )


@pytest.fixture
def decide() -> OutcomeDecision:
    return OutcomeDecision(GlobalConfig(result_ttl_s=60.0), FakeClock(NOW))


def test_a_value_is_done_and_kept_for_the_result_ttl(decide: OutcomeDecision) -> None:
    outcome = decide.of_value(run_of(), message(), definition(), 5)
    assert outcome.kind is OutcomeKind.DONE
    assert (outcome.task_id, outcome.token) == ("t-1", 7)
    assert outcome.result_expires_at == NOW + 60.0


def test_a_value_that_cannot_be_encoded_fails_without_retry(decide: OutcomeDecision) -> None:
    outcome = decide.of_value(run_of(), message(retries=3), definition(), object())
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.type == "UnencodableResult"


def test_an_error_retries_while_attempts_remain(decide: OutcomeDecision) -> None:
    retried = decide.of_error(run_of(1), message(retries=1), definition(), ValueError("x"))
    assert retried.kind is OutcomeKind.RETRY
    assert retried.retry_at is not None and NOW <= retried.retry_at <= NOW + 1.0
    failed = decide.of_error(run_of(2), message(retries=1), definition(), ValueError("x"))
    assert failed.kind is OutcomeKind.FAILED


def test_retry_with_a_delay_waits_that_long(decide: OutcomeDecision) -> None:
    outcome = decide.of_error(run_of(), message(retries=1), definition(), Retry(delay=30))
    assert outcome.kind is OutcomeKind.RETRY and outcome.retry_at == NOW + 30


def test_retry_on_and_dont_retry_on_pick_the_retryable_errors() -> None:
    only_io = definition(retry_on=OSError)
    assert is_retryable(only_io, ConnectionError())
    assert not is_retryable(only_io, ValueError())
    not_value = definition(dont_retry_on=ValueError)
    assert not is_retryable(not_value, ValueError())
    assert is_retryable(not_value, KeyError())
    assert not is_retryable(None, ValueError())  # an unknown task is never retried
    assert is_retryable(None, Retry())


@pytest.mark.parametrize(
    ("reason", "kind"),
    [("cancel", OutcomeKind.CANCELLED), ("shutdown", OutcomeKind.RELEASE), ("lost", None)],
)
def test_an_interruption_decides_by_its_reason(
    decide: OutcomeDecision, reason: str, kind: OutcomeKind | None
) -> None:
    run = run_of()
    run.interrupt(reason)  # type: ignore[arg-type]
    outcome = decide.of_interruption(run, message(), definition())
    assert (outcome.kind if outcome is not None else None) is kind


def test_a_timeout_is_an_error_like_any_other(decide: OutcomeDecision) -> None:
    run = run_of()
    run.interrupt("timeout")
    outcome = decide.of_interruption(run, message(retries=0, timeout_s=2.0), definition())
    assert outcome is not None and outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.type == "TaskTimeout"


def test_what_an_interrupted_run_returned_or_raised_gives_way_to_the_interruption(
    decide: OutcomeDecision,
) -> None:
    run = run_of()
    run.interrupt("shutdown")
    returned = decide.of_returned(run, message(), definition(), 1)
    raised = decide.of_raised(run, message(), definition(), ValueError())
    assert returned is not None and returned.kind is OutcomeKind.RELEASE
    assert raised is not None and raised.kind is OutcomeKind.RELEASE


def test_a_value_returned_after_a_cancel_request_stands(decide: OutcomeDecision) -> None:
    run = run_of()
    run.interrupt("cancel")
    outcome = decide.of_returned(run, message(), definition(), 1)
    assert outcome is not None and outcome.kind is OutcomeKind.DONE


def test_an_unknown_task_goes_back_while_another_process_may_know_it(
    decide: OutcomeDecision,
) -> None:
    young = message(created_at=NOW)
    put_back = decide.of_unknown_task(run_of(), young, ["other"], shared=True)
    assert put_back.kind is OutcomeKind.RELEASE and put_back.retry_at is not None
    failed = decide.of_unknown_task(run_of(), young, ["other"], shared=False)
    assert failed.kind is OutcomeKind.FAILED
    assert failed.error is not None and "known: other" in failed.error.message


def test_an_expired_message_is_not_run(decide: OutcomeDecision) -> None:
    outcome = decide.of_expiry(run_of(), message(expires_at=NOW - 1))
    assert outcome.kind is OutcomeKind.EXPIRED


def test_a_context_parameter_is_not_an_argument_of_the_decision() -> None:
    # The decision never looks at the arguments: a task with a TaskContext decides the same.
    async def job(ctx: TaskContext) -> None:
        return None

    made = make_definition(job, name="job", retry_on=None, dont_retry_on=None, defaults={})
    assert is_retryable(made, ValueError())
