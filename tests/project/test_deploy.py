"""The systemd unit on the deploy page (``docs/deploy.md``): it drains as the worker does, and
``systemd-analyze verify`` accepts it where that tool exists."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from taskflow._running import STOP_SIGNALS

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "deploy.md"


def _block(after: str, language: str) -> str:
    text = PAGE.read_text(encoding="utf-8")
    match = re.search(rf"{re.escape(after)}.*?```{language}\n(.*?)```", text, re.DOTALL)
    assert match, f"docs/deploy.md has no ```{language} block after {after!r}"
    return match[1]


def unit() -> str:
    return _block("## The unit", "ini")


def settings(text: str) -> dict[str, str]:
    """``KEY=value`` lines of a unit or an environment file (comments and sections left out)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, equals, value = line.partition("=")
        if equals and not key.startswith("#"):
            found[key] = value
    return found


def environment() -> dict[str, str]:
    return settings(_block("/etc/exports/worker.env", "sh"))


def test_the_unit_stops_with_a_signal_the_worker_drains_on() -> None:
    service = settings(unit())
    assert getattr(signal, service["KillSignal"]) in STOP_SIGNALS
    # The main process gets the stop (a supervisor forwards it); SIGKILL reaches all at the end.
    assert service["KillMode"] in ("mixed", "control-group")
    assert service["EnvironmentFile"] == "/etc/exports/worker.env"
    assert service["Restart"] in ("always", "on-failure")


def test_the_stop_timeout_outlasts_the_grace_period() -> None:
    grace = float(environment()["TASKFLOW_SHUTDOWN_GRACE_S"])
    assert float(settings(unit())["TimeoutStopSec"]) >= grace + 10


def test_every_variable_the_unit_uses_is_in_the_environment_file() -> None:
    used = set(re.findall(r"\$\{(\w+)\}", unit()))
    assert used
    assert used <= set(environment())


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (apt-get install systemd provides it)")
    taskflow_cli = Path(sys.executable).parent / "taskflow"
    assert taskflow_cli.is_file(), "the taskflow command is not installed next to this Python"
    # The paths of the example host are this machine's: verify checks that ExecStart= exists.
    text = unit().replace("/opt/exports/venv/bin/taskflow", str(taskflow_cli))
    text = text.replace("/opt/exports", str(tmp_path))
    path = tmp_path / "exports-worker.service"
    path.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [tool, "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    complaints = [line for line in done.stderr.splitlines() if path.name in line]
    assert not complaints, "\n".join(complaints)
