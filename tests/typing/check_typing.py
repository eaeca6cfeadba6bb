"""Check that mypy accepts and rejects exactly what the files in ``tests/typing/`` say.

Convention:

* ``ok_*.py`` must pass ``mypy --strict`` with no error at all;
* ``bad_*.py`` must fail it, with errors exactly on the lines that carry a ``# E: <code>``
  comment, with exactly those error codes (several: ``# E: arg-type, call-arg``), and nowhere
  else. A bad file without any marker is itself an error.

Run it from anywhere: ``python tests/typing/check_typing.py [FILE ...]`` (no FILE: every ok/bad
file beside this script). It runs mypy once over all the files (in-process, with the repo's
``pyproject.toml``), prints each mismatch and exits 1 if there is one, 2 if mypy itself broke.
``tests/core/test_typing.py`` runs it as part of the suite. These files are never imported or run:
they exist only to be type-checked.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from mypy import api as mypy_api

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
MARKER = re.compile(r"#\s*E:\s*(?P<codes>[a-z0-9-]+(?:\s*,\s*[a-z0-9-]+)*)")
# "path:line: error: message  [code]" (mypy's default one-line format, no columns).
MYPY_LINE = re.compile(
    r"^(?P<path>.+?):(?P<line>\d+): (?P<severity>error|note): (?P<message>.*?)"
    r"(?:  \[(?P<code>[a-z0-9-]+)\])?$"
)


@dataclass(frozen=True)
class MypyError:
    """One error mypy reported."""

    line: int
    code: str
    message: str


def expected_errors(path: Path) -> set[tuple[int, str]]:
    """The (line, code) pairs a file's ``# E:`` markers promise."""
    expected: set[tuple[int, str]] = set()
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = MARKER.search(text)
        if match:
            expected.update((number, code.strip()) for code in match["codes"].split(","))
    return expected


def run_mypy(files: list[Path]) -> tuple[dict[Path, list[MypyError]], str, int]:
    """Run mypy --strict once over `files`; return its errors per file, its raw output and its
    exit status."""
    args = [
        "--strict",
        "--config-file",
        str(REPO_ROOT / "pyproject.toml"),
        "--no-error-summary",
        "--show-error-codes",
        "--hide-error-context",
        "--no-pretty",
        "--no-color-output",
        *(str(f) for f in files),
    ]
    stdout, stderr, status = mypy_api.run(args)
    errors: dict[Path, list[MypyError]] = defaultdict(list)
    for text in stdout.splitlines():
        match = MYPY_LINE.match(text)
        if match and match["severity"] == "error":
            path = Path(match["path"]).resolve()
            errors[path].append(
                MypyError(int(match["line"]), match["code"] or "no-code", match["message"])
            )
    return errors, stdout + stderr, status


def problems_of(path: Path, errors: list[MypyError]) -> list[str]:
    """What is wrong with one file's result, as readable lines (empty: all as promised)."""
    name = path.name
    expected = expected_errors(path)
    if name.startswith("ok_"):
        problems = [f"{name}:{e.line}: unexpected error [{e.code}]: {e.message}" for e in errors]
        if expected:
            problems.append(f"{name}: ok_ files must not carry '# E:' markers")
        return problems
    if not expected:
        return [f"{name}: a bad_ file needs at least one '# E: <code>' marker"]
    actual = {(e.line, e.code) for e in errors}
    problems = [
        f"{name}:{e.line}: unexpected error [{e.code}]: {e.message}"
        for e in errors
        if (e.line, e.code) not in expected
    ]
    problems += [
        f"{name}:{line}: expected an error [{code}], mypy reported none there"
        for line, code in sorted(expected - actual)
    ]
    return problems


def default_files() -> list[Path]:
    """Every ok_/bad_ file beside this script."""
    return sorted([*HERE.glob("ok_*.py"), *HERE.glob("bad_*.py")])


def main(argv: list[str]) -> int:
    files = [Path(a).resolve() for a in argv] or default_files()
    misnamed = [f.name for f in files if not f.name.startswith(("ok_", "bad_"))]
    if misnamed:
        print(f"check_typing: files must be named ok_*.py or bad_*.py: {misnamed}")
        return 2
    if not files:
        print(f"check_typing: no ok_*.py or bad_*.py files in {HERE}")
        return 1
    errors, output, status = run_mypy(files)
    if status not in (0, 1):
        print(f"check_typing: mypy itself failed (exit status {status}):\n{output}")
        return 2
    elsewhere = [str(path) for path in errors if path not in files]
    problems = [p for f in files for p in problems_of(f, errors.get(f, []))]
    if elsewhere:
        problems.append(f"mypy reported errors in files outside the checked ones: {elsewhere}")
    for problem in problems:
        print(problem)
    n_ok = sum(f.name.startswith("ok_") for f in files)
    verdict = "FAILED" if problems else "passed"
    print(
        f"check_typing: {verdict}: {n_ok} ok file(s), {len(files) - n_ok} bad file(s), "
        f"{len(problems)} problem(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
