"""mypy accepts the ``tests/typing/ok_*.py`` files and rejects exactly the marked lines of the
``bad_*.py`` files (see ``tests/typing/check_typing.py`` for the convention)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECKER = Path(__file__).parents[1] / "typing" / "check_typing.py"


@pytest.mark.timeout(360)  # longer than the default: mypy's deadline is 300 s
@pytest.mark.slow
def test_mypy_accepts_ok_files_and_rejects_exactly_the_marked_lines_of_bad_files() -> None:
    run = subprocess.run(
        [sys.executable, str(CHECKER)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, f"check_typing.py failed:\n{run.stdout}{run.stderr}"
    assert "check_typing: passed" in run.stdout
