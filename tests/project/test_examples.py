"""Every ``examples/*.py`` runs as a script: exit status 0 within 30 s, with its expected output.

Conventions for example authors (this test reads them from the example's source):

* ``REQUIRES = "redis"`` (or ``"postgres"``), a module-level line: the example needs that server.
  It runs only when the service URL is set (``TASKFLOW_TEST_REDIS_URL`` /
  ``TASKFLOW_TEST_POSTGRES_DSN``, see ``tests/services.py``) and is skipped otherwise; the URL
  is passed on to the example in the same environment variable.
* ``# expect: <text>`` comment lines: each <text> must appear in the example's stdout. Examples
  listed in `MARKERS` below are checked against those markers as well.

An example with neither markers nor ``# expect:`` lines must at least print something.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import POSTGRES_ENV, REDIS_ENV

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT_S = 30

SERVICE_ENV = {"redis": REDIS_ENV, "postgres": POSTGRES_ENV}

MARKERS: dict[str, list[str]] = {
    "quickstart.py": [
        "add(2, 3) = 5",
        "batch of add(i, i): [0, 2, 4, 6, 8]",
        "flaky: succeeded on attempt 3",
        "countdown yields: [3, 2, 1]",
        "divide(1, 0) failed remotely: ZeroDivisionError",
    ],
    "dead_letters.py": ["failed for good", "dead letters left: 0"],
    "lifecycle.py": ["startup:", "shutdown:"],
    "progress.py": ["running: 1/4", "result:"],
    "sync_client.py": ["add(2, 3) = 5", "raised remotely: RuntimeError"],
}

REQUIRES_LINE = re.compile(r"""^REQUIRES\s*(?::\s*\w+\s*)?=\s*["'](\w+)["']""", re.MULTILINE)
EXPECT_LINE = re.compile(r"^\s*#\s*expect:\s*(.+?)\s*$", re.MULTILINE)


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES_DIR.glob("*.py") if not p.name.startswith("_"))


def required_service(source: str) -> str | None:
    match = REQUIRES_LINE.search(source)
    return match[1] if match else None


def expected_markers(path: Path, source: str) -> list[str]:
    return MARKERS.get(path.name, []) + EXPECT_LINE.findall(source)


def test_there_are_examples() -> None:
    assert any(p.name == "quickstart.py" for p in example_files())


def test_conventions_are_read_from_the_source() -> None:
    source = 'REQUIRES = "redis"\n# expect: hello world\nprint("hello world")\n'
    assert required_service(source) == "redis"
    assert EXPECT_LINE.findall(source) == ["hello world"]
    assert required_service("print('no server')\n") is None


@pytest.mark.slow
@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_example_runs(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    env = dict(os.environ)
    service = required_service(source)
    if service is not None:
        variable = SERVICE_ENV.get(service)
        assert variable is not None, f"{path.name}: unknown REQUIRES = {service!r}"
        if not os.environ.get(variable):
            pytest.skip(f"{path.name} needs {service}: set {variable} to run it")
    run = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=path.parent,
        env=env,
        check=False,
    )
    report = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert run.returncode == 0, f"{path.name} exited with {run.returncode}\n{report}"
    markers = expected_markers(path, source)
    for marker in markers:
        assert marker in run.stdout, f"{path.name}: {marker!r} not in its output\n{report}"
    if not markers:
        assert run.stdout.strip(), f"{path.name} printed nothing\n{report}"


@pytest.mark.slow
@pytest.mark.parametrize("service", ["redis", "postgres"])
@pytest.mark.parametrize("example", ["exports.py", "flow.py"])
def test_an_example_runs_against_a_url_given_on_its_command_line(
    example: str, service: str
) -> None:
    path = EXAMPLES_DIR / example
    url = os.environ.get(SERVICE_ENV[service])
    if not url:
        pytest.skip(f"set {SERVICE_ENV[service]} to run examples/{example} on {service}")
    run = subprocess.run(
        [sys.executable, str(path), url],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=path.parent,
        check=False,
    )
    report = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert run.returncode == 0, report
    for marker in expected_markers(path, path.read_text(encoding="utf-8")):
        assert marker in run.stdout, f"{marker!r} not in its output\n{report}"


# -- public names only ---------------------------------------------------------------------------

DOCS = [
    *sorted((EXAMPLES_DIR.parent / "docs").rglob("*.md")),
    EXAMPLES_DIR.parent / "README.md",
]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
IMPORT_LINE = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\s+(.+)|import\s+([\w.]+))", re.M)


def _private_module(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "taskflow" and any(part.startswith("_") for part in parts[1:])


def private_imports(source: str) -> list[str]:
    """What `source` imports from taskflow that is not public (``module`` or ``module.name``)."""
    try:
        tree = compile(source, "<code>", "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError:  # a fragment of a docs page: read its import lines
        found: list[str] = []
        for module, names, plain in IMPORT_LINE.findall(source):
            if plain and _private_module(plain):
                found.append(plain)
            elif module.split(".")[0] == "taskflow":
                private = [n.strip() for n in names.split(",") if n.strip().startswith("_")]
                found += [module] if _private_module(module) else []
                found += [f"{module}.{name}" for name in private]
        return found
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _private_module(alias.name)]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "taskflow":
            module = node.module or ""
            found += [module] if _private_module(module) else []
            found += [f"{module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_the_public_names_check_catches_private_imports() -> None:
    assert private_imports("from taskflow.supervisor._plan import day_bounds\n") == [
        "taskflow.supervisor._plan"
    ]
    assert private_imports("import taskflow._worker\n") == ["taskflow._worker"]
    assert private_imports("from taskflow import _app, Worker\n") == ["taskflow._app"]
    assert private_imports("from taskflow._app import (\n    QueueTasks,\n)\nawait x\n") == [
        "taskflow._app"
    ]
    assert private_imports("from taskflow import _app\n...some prose...\n") == ["taskflow._app"]
    assert private_imports("from taskflow.supervisor import Plan, day_bounds\n") == []


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_examples_import_only_public_names(path: Path) -> None:
    assert private_imports(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(EXAMPLES_DIR.parent)))
def test_docs_import_only_public_names(path: Path) -> None:
    blocks = PYTHON_BLOCK.findall(path.read_text(encoding="utf-8"))
    assert [name for block in blocks for name in private_imports(block)] == []
