"""``taskflow web``: one line and its own exit status for each way it cannot start (port
taken, bad app, memory app without --with-worker, the web extra missing), and a real server
process that answers, signs in with the token from the environment and stops on SIGTERM."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import httpx
import pytest

from taskflow.cli import main
from taskflow.cli._errors import ExitCode
from taskflow.cli._web import bind
from tests.cli_support import env_for, read_rest, start_cli, wait_for_line, write_app
from tests.services import free_port

MEMORY_APP = """
from taskflow import QueueTasks
app = QueueTasks("webcli")

@app.task
async def add(a: int, b: int) -> int:
    return a + b
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err.strip()


def test_each_failure_to_start_has_its_line_and_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = write_app(tmp_path, "webcli_mem", MEMORY_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, line = run(capsys, "web", "no_such_module:app")
    assert code == ExitCode.USAGE and line.startswith("taskflow: cannot import module")
    code, line = run(capsys, "web", target)
    assert code == ExitCode.NOT_SHARED and "--with-worker" in line
    with bind("127.0.0.1", 0) as taken:
        port = str(taken.getsockname()[1])
        code, line = run(capsys, "web", target, "--with-worker", "--port", port)
    assert code == ExitCode.PORT_IN_USE and f"port {port}" in line
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extra were not installed
    code, line = run(capsys, "web", target)
    assert code == ExitCode.MISSING_EXTRA and "taskflow[web]" in line
    assert "\n" not in line


@pytest.mark.timeout(60)
def test_a_served_app_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    target = write_app(tmp_path, "webcli_served", MEMORY_APP)
    port = free_port()
    proc = start_cli(
        tmp_path,
        "web",
        target,
        "--with-worker",
        "--port",
        str(port),
        env=env_for(tmp_path, TASKFLOW_WEB_TOKEN="from-env"),
    )
    seen = wait_for_line(proc, "taskflow web: app 'webcli'")
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base) as client:
        session = client.get("/api/session").json()
        assert session["read_only"] is False
        login = client.post(
            "/api/login", json={"token": "from-env"}, headers={"X-CSRF-Token": session["csrf"]}
        )
        assert login.json()["signed_in"] is True
        sent = client.post(
            "/api/tasks",
            json={"name": "add", "args": [2, 3]},
            headers={"X-CSRF-Token": login.json()["csrf"]},
        )
        assert sent.status_code == 201
        task_id = sent.json()["task_id"]
        wait_for_line(proc, "ready", seen)  # the worker beside the server
        status = ""
        for _ in range(200):  # the worker runs it within a few event-loop turns
            status = client.get(f"/api/tasks/{task_id}").json()["status"]
            if status == "done":
                break
        assert status == "done"
    proc.send_signal(signal.SIGTERM)
    assert read_rest(proc, seen) == 0, "\n".join(seen)
