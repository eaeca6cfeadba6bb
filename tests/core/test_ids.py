"""The task id generator (`taskflow._ids`): order and uniqueness when the clock stalls, runs
back or a millisecond overflows, a new stem after ``os.fork``, and stable queue codes."""

from __future__ import annotations

import multiprocessing
import re
import threading
from types import SimpleNamespace

import pytest

from taskflow import _ids
from taskflow._ids import TASK_ID_LENGTH, TASK_ID_PATTERN, is_task_id, new_task_id, queue_code


def _generator_at(monkeypatch: pytest.MonkeyPatch, times_ms: list[int]) -> _ids._Generator:
    """A fresh generator whose clock reads `times_ms` (milliseconds), one per id, in turn."""
    readings = iter(times_ms)
    clock = SimpleNamespace(time_ns=lambda: next(readings) * 1_000_000)
    monkeypatch.setattr(_ids, "time", clock)
    return _ids._Generator()


def test_ids_keep_their_order_when_the_clock_stalls_or_runs_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    times = [1_000, 1_000, 1_001, 990, 990, 1_001, 1_002]
    generator = _generator_at(monkeypatch, times)
    ids = [generator.new("c" * 8) for _ in times]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_a_millisecond_past_its_sequence_borrows_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    per_ms = 32**3
    generator = _generator_at(monkeypatch, [5_000] * (per_ms + 2) + [5_001])
    ids = [generator.new("c" * 8) for _ in range(per_ms + 3)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # Ids past the 32,768th of millisecond 5000 are made as of 5001, as is the one made then.
    assert ids[per_ms - 1][:9] < ids[per_ms][:9] == ids[-1][:9]


def test_ids_made_by_several_threads_are_unique() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(new_task_id("c" * 8) for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    ids = [i for out in made for i in out]
    assert len(set(ids)) == len(ids) == 20_000
    assert all(out == sorted(out) for out in made)


def _child_ids(queue: multiprocessing.Queue[list[str]]) -> None:
    queue.put([new_task_id("c" * 8) for _ in range(100)])


def test_a_forked_child_draws_its_own_stem() -> None:
    """A module-level app made before a fork (a preloading web server) must not make the same
    ids in every child: the child's stem is drawn again."""
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[list[str]] = context.Queue()
    parent = [new_task_id("c" * 8) for _ in range(100)]
    child = context.Process(target=_child_ids, args=(results,))
    child.start()
    theirs = results.get(timeout=30)
    child.join(timeout=30)
    ours = [new_task_id("c" * 8) for _ in range(100)]
    stem = slice(12, 22)
    assert {i[stem] for i in theirs} != {i[stem] for i in parent + ours}
    assert not set(theirs) & set(parent + ours)


def test_the_shape_is_thirty_characters_of_lowercase_crockford_base32() -> None:
    task_id = new_task_id(queue_code("default"))
    assert TASK_ID_LENGTH == 30 and re.fullmatch(TASK_ID_PATTERN, task_id)
    assert not set(task_id) & set("ilou")
    assert is_task_id(task_id)
    assert not is_task_id(task_id.upper())
    assert not is_task_id(task_id[:-1])
    assert not is_task_id("order-17")


def test_a_queue_code_is_eight_characters_fixed_by_the_name() -> None:
    assert queue_code("default") == queue_code("default")
    assert queue_code("default") != queue_code("Default")
    assert all(len(queue_code(q)) == 8 for q in ("", "default", "q ü/1", "x" * 1000))
    assert new_task_id(queue_code("emails")).endswith(queue_code("emails"))
