"""``taskflow schedules`` against Redis and PostgreSQL: the schedules of an app with their state
in the backend, pausing and resuming one for every worker, as a table and as JSON, and its
errors (one line, a distinct exit status)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflow.cli import ExitCode
from tests.cli_support import drop_shared, env_for, run_cli, shared_url, write_app

pytestmark = pytest.mark.slow

APP = """
import os
from datetime import timedelta

from taskflow import QueueTasks

app = QueueTasks(name="cli-test", broker=os.environ["TF_URL"])


@app.periodic(cron="*/5 * * * *", tz="Europe/Moscow", name="report")
@app.periodic(every=timedelta(milliseconds=500), name="generator")
@app.task(name="beat")
async def beat() -> None: ...
"""


@pytest.fixture(params=["redis", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    value = shared_url(request.param)
    try:
        yield value
    finally:
        drop_shared(value)


def test_schedules_lists_pauses_and_resumes(tmp_path: Path, url: str) -> None:
    target = write_app(tmp_path, "beats", APP)
    env = env_for(tmp_path, TF_URL=url)

    done = run_cli(tmp_path, "schedules", target, env=env)
    assert done.returncode == ExitCode.OK, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "SCHEDULE",
        "TASK",
        "WHEN",
        "TZ",
        "NEXT",
        "SLOT",
        "LAST",
        "SLOT",
        "PAUSED",
    ]
    assert lines[1].startswith("generator") and "every 0.5s" in lines[1]
    assert lines[2].startswith("report") and "cron */5 * * * *" in lines[2]
    assert "Europe/Moscow" in lines[2] and lines[2].endswith("no")
    assert lines[-1] == "2 schedule(s), 0 paused"

    done = run_cli(tmp_path, "schedules", target, "--pause", "report", "--json", env=env)
    assert done.returncode == ExitCode.OK, done.stderr
    docs = {d["name"]: d for d in map(json.loads, done.stdout.splitlines())}
    assert docs["report"]["paused"] is True and docs["report"]["next_slot"] is None
    assert docs["generator"] == {
        "name": "generator",
        "task": "beat",
        "cron": None,
        "every_s": 0.5,
        "tz": "UTC",
        "next_slot": docs["generator"]["next_slot"],
        "last_slot": None,
        "paused": False,
    }
    assert docs["generator"]["next_slot"].endswith("+00:00")

    done = run_cli(tmp_path, "schedules", target, "--resume", "report", "--json", env=env)
    assert done.returncode == ExitCode.OK, done.stderr
    report = [json.loads(line) for line in done.stdout.splitlines()][1]
    assert report["paused"] is False and report["next_slot"].endswith("+03:00")


def test_an_unknown_schedule_is_one_line_and_not_found(tmp_path: Path, url: str) -> None:
    target = write_app(tmp_path, "beats", APP)
    done = run_cli(
        tmp_path, "schedules", target, "--pause", "nope", env=env_for(tmp_path, TF_URL=url)
    )
    assert done.returncode == ExitCode.NOT_FOUND
    assert done.stderr.splitlines()[-1] == (
        "taskflow: no schedule named 'nope' is declared (declared: generator, report)"
    )
    assert done.stdout == ""


def test_pause_and_resume_together_is_a_usage_error(tmp_path: Path, url: str) -> None:
    target = write_app(tmp_path, "beats", APP)
    done = run_cli(
        tmp_path,
        "schedules",
        target,
        "--pause",
        "a",
        "--resume",
        "b",
        env=env_for(tmp_path, TF_URL=url),
    )
    assert done.returncode == ExitCode.USAGE
    assert "not allowed with argument" in done.stderr
