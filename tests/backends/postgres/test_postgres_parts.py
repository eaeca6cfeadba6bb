"""The parts of the PostgreSQL backend that need no server, on their own: notification payloads
(`Notification`, `PushedDone`), what was heard per queue and whom it wakes (`Wakeups`), the
``?schema=`` of a URL, what a driver error means, the waits between retries, and progress
updates merged per attempt (`report_batch`).

They have no public names (they are the backend's insides), so this module imports the
package's private modules; everything else tests them through `taskflow.postgres`.
"""

from __future__ import annotations

import base64
from types import SimpleNamespace

import anyio
import asyncpg
import pytest

from taskflow.abc import Progress, ProgressUpdate, TaskOutcome, TaskStatus
from taskflow.postgres import _client
from taskflow.postgres._client import Backoff, breaks_connection, is_transient, split_dsn
from taskflow.postgres._codec import Attempt, report_batch
from taskflow.postgres._listener import DONE, WORK, Notification, PushedDone
from taskflow.postgres._wakeups import Wakeups

# -- notification payloads --------------------------------------------------------------------


def test_a_payload_is_its_kind_and_its_items() -> None:
    # `<schema>.notify` sends the kind, then each item after a comma.
    assert Notification.parse("w:,default,emails") == Notification(WORK, ["default", "emails"])
    assert Notification.parse("t:") == Notification("t", [])


def test_a_pushed_done_carries_the_whole_outcome() -> None:
    result = base64.b64encode(b"\x07").decode()
    item = f"1700000000.5;{result};id;with;semicolons"
    done = PushedDone.parse(item)
    assert done.task_id == "id;with;semicolons"
    assert done.outcome() == TaskOutcome(
        id="id;with;semicolons",
        status=TaskStatus.DONE,
        result=b"\x07",
        result_expires_at=1700000000.5,
    )
    assert Notification.parse(f"d:,{item}").kind == DONE


def test_a_pushed_done_without_result_or_expiry() -> None:
    assert PushedDone.parse(";;t1").outcome() == TaskOutcome(id="t1", status=TaskStatus.DONE)


# -- Wakeups ----------------------------------------------------------------------------------


async def test_work_announced_calls_the_watchers_of_its_queues_only() -> None:
    wakeups = Wakeups()
    calls: list[str] = []
    wakeups.watch("w1", ["a", "b"], lambda: calls.append("w1"))
    wakeups.watch("w2", ["c"], lambda: calls.append("w2"))
    wakeups.announce(["a"], work=True)
    wakeups.announce(["c"], work=False)  # events only: no watcher is called
    assert calls == ["w1"]
    wakeups.unwatch("w1")
    wakeups.announce(["a", "b"], work=True)
    assert calls == ["w1"]


async def test_watching_again_replaces_the_watch() -> None:
    wakeups = Wakeups()
    calls: list[str] = []
    wakeups.watch("w1", ["a"], lambda: calls.append("first"))
    wakeups.watch("w1", ["b"], lambda: calls.append("second"))
    wakeups.announce(["a"], work=True)
    wakeups.announce(["b"], work=True)
    assert calls == ["second"]


async def test_marks_tell_whether_anything_was_heard_since() -> None:
    wakeups = Wakeups()
    work, events = wakeups.work_mark("a"), wakeups.event_mark("a")
    wakeups.announce(["b"], work=True)
    assert (wakeups.work_mark("a"), wakeups.event_mark("a")) == (work, events)
    wakeups.announce(["a"], work=False)
    assert wakeups.work_mark("a") == work and wakeups.event_mark("a") != events
    wakeups.announce(["a"], work=True)
    assert wakeups.work_mark("a") != work


async def test_a_listener_gap_changes_every_mark_and_calls_every_watcher_once() -> None:
    wakeups = Wakeups()
    calls: list[str] = []
    wakeups.watch("w1", ["a"], lambda: calls.append("w1"))
    wakeups.watch("w2", ["b"], lambda: calls.append("w2"))
    work, events = wakeups.work_mark("z"), wakeups.event_mark("z")
    wakeups.after_gap()
    assert sorted(calls) == ["w1", "w2"]
    assert wakeups.work_mark("z") != work and wakeups.event_mark("z") != events


async def test_a_sleeper_wakes_when_its_condition_holds() -> None:
    wakeups = Wakeups()
    seen = wakeups.event_mark("a")
    woke = anyio.Event()

    async def sleeper() -> None:
        await wakeups.wait_changed(lambda: wakeups.event_mark("a") != seen)
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await anyio.wait_all_tasks_blocked()
        wakeups.announce(["b"], work=True)  # another queue: it checks and sleeps on
        await anyio.wait_all_tasks_blocked()
        assert not woke.is_set()
        wakeups.announce(["a"], work=False)
        with anyio.fail_after(5):
            await woke.wait()


async def test_close_wakes_every_sleeper() -> None:
    wakeups = Wakeups()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wakeups.wait_changed, lambda: False)
            await anyio.wait_all_tasks_blocked()
            wakeups.close()  # the storage closed: the sleeper returns, its condition unmet


# -- the client -------------------------------------------------------------------------------


def test_the_schema_parameter_is_taken_out_of_the_url() -> None:
    assert split_dsn("postgresql://u:p@h:5/db?sslmode=disable&schema=jobs") == (
        "postgresql://u:p@h:5/db?sslmode=disable",
        "jobs",
    )
    assert split_dsn("postgresql://u:p@h/db") == ("postgresql://u:p@h/db", None)


@pytest.mark.parametrize(
    ("error", "transient", "breaks"),
    [
        (ConnectionResetError(), True, True),
        (asyncpg.exceptions.AdminShutdownError("terminating"), True, True),
        (asyncpg.exceptions.InterfaceError("connection is closed"), True, True),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), True, False),
        (asyncpg.exceptions.SerializationError("could not serialize"), True, False),
        (asyncpg.exceptions.QueryCanceledError("timeout"), False, False),
        (asyncpg.exceptions.UniqueViolationError("duplicate"), False, False),
        (ValueError("a bug"), False, False),
    ],
)
def test_what_a_driver_error_means(error: Exception, transient: bool, breaks: bool) -> None:
    assert (is_transient(error), breaks_connection(error)) == (transient, breaks)


async def test_the_waits_between_retries_double_up_to_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waited: list[float] = []

    async def sleep(delay: float) -> None:
        waited.append(delay)

    monkeypatch.setattr(_client, "asyncio", SimpleNamespace(sleep=sleep))
    backoff = Backoff()
    for _ in range(8):
        await backoff.sleep()
    assert waited == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert backoff.attempts == 8


# -- progress updates -------------------------------------------------------------------------


def test_progress_updates_are_merged_per_attempt() -> None:
    half, most = Progress(done=5, total=10), Progress(done=9, total=None)
    batch = report_batch(
        [
            ProgressUpdate("t1", 3, progress=half, yields=[b"a"]),
            ProgressUpdate("t2", 1, yields=[b"x"]),
            ProgressUpdate("t1", 3, progress=most, yields=[b"b", b"c"]),
            ProgressUpdate("t1", 3, yields=[b"d"]),  # no progress: the newest one stays
        ]
    )
    assert batch.attempts == [Attempt("t1", 3), Attempt("t2", 1)]
    ids, tokens, progress, details, yields, owners = batch.columns
    assert (ids, tokens) == (["t1", "t2"], [3, 1])
    assert progress[1] is None and details == ["9/?", None]
    assert yields == [b"a", b"b", b"c", b"d", b"x"]
    assert owners == [1, 1, 1, 1, 2]
