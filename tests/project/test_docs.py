"""The docs stay true to the code: settings, examples, exceptions, public names, file map, snippets.

`mkdocs build --strict` (run by ``scripts/test``) checks links and docstrings; these tests check
what it cannot: that every `GlobalConfig` setting is on the configuration page with its default
and environment variable, every example is mentioned, the exceptions page mirrors
``_exceptions.py``, every public name has a reference entry, every file and function the
architecture page names exists, and the complete programs and example tests on the pages run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import taskflow
import taskflow.abc
from taskflow import GlobalConfig
from taskflow import _exceptions as exceptions_module

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SRC = ROOT / "src" / "taskflow"


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def all_docs_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.rglob("*.md")))


# -- configuration -----------------------------------------------------------------------------


def settings_table_rows() -> dict[str, list[str]]:
    """The configuration page's settings table, as {setting: [cells]}."""
    rows: dict[str, list[str]] = {}
    for line in page("configuration.md").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = cells
    return rows


def test_configuration_page_lists_every_setting() -> None:
    assert set(settings_table_rows()) == set(GlobalConfig.describe())


@pytest.mark.parametrize("name", sorted(GlobalConfig.describe()))
def test_configuration_row_has_the_env_var_default_and_meaning(name: str) -> None:
    default, doc = GlobalConfig.describe()[name]
    _, env_var, shown_default, meaning = settings_table_rows()[name]
    assert env_var == f"`TASKFLOW_{name.upper()}`"
    assert shown_default == f"`{default!r}`"
    assert meaning == doc


# -- examples ----------------------------------------------------------------------------------


def example_names() -> list[str]:
    return sorted(p.name for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


def test_there_are_examples_to_document() -> None:
    assert "quickstart.py" in example_names()


@pytest.mark.parametrize("name", example_names())
def test_every_example_is_mentioned_in_the_docs(name: str) -> None:
    assert f"examples/{name}" in all_docs_text(), f"no page mentions examples/{name}"


# -- exceptions --------------------------------------------------------------------------------


def exception_classes() -> list[str]:
    return sorted(
        name
        for name in exceptions_module.__all__
        if isinstance(getattr(exceptions_module, name), type)
        and issubclass(getattr(exceptions_module, name), BaseException)
    )


def tree_block(text: str) -> str:
    match = re.search(r"## The tree\n.*?```\n(.*?)```", text, re.DOTALL)
    assert match, "the exceptions page has no tree block under '## The tree'"
    return match[1]


def tree_parents(tree: str) -> dict[str, str]:
    """{class: parent} read from the drawn tree, by indentation."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in tree.splitlines():
        match = re.search(r"(\w+)", line)
        if not match:
            continue
        depth, name = match.start(), match[1]
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


@pytest.mark.parametrize("name", exception_classes())
def test_exceptions_page_shows_every_class_in_the_tree_and_table(name: str) -> None:
    text = page("exceptions.md")
    assert re.search(rf"\b{name}\b", tree_block(text)), f"{name} is missing from the tree"
    assert f"| `{name}` |" in text, f"{name} has no row in 'Who raises what'"


def test_exceptions_tree_matches_the_class_hierarchy() -> None:
    parents = tree_parents(tree_block(page("exceptions.md")))
    for name in exception_classes():
        cls = getattr(exceptions_module, name)
        if cls is exceptions_module.TaskflowError:
            continue
        taskflow_bases = [
            base.__name__ for base in cls.__bases__ if issubclass(base, taskflow.TaskflowError)
        ]
        assert parents.get(name) in taskflow_bases, (
            f"the tree puts {name} under {parents.get(name)}, the code under {taskflow_bases}"
        )


# -- reference ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(taskflow.__all__))
def test_every_public_name_has_a_reference_entry(name: str) -> None:
    assert re.search(rf"^::: taskflow\.{name}$", page("reference/api.md"), re.MULTILINE)


@pytest.mark.parametrize("name", sorted(taskflow.abc.__all__))
def test_every_abc_name_has_a_reference_entry(name: str) -> None:
    assert re.search(rf"^::: taskflow\.abc\.{name}$", page("reference/abc.md"), re.MULTILINE)


# -- architecture ------------------------------------------------------------------------------

# `file.py` (`name`, `Class.method`, ...) as written in the architecture table.
FILE_WITH_NAMES = re.compile(r"`([\w/]+\.py)`(?: \(([^)]*)\))?")


def architecture_references() -> list[tuple[str, list[str]]]:
    refs = []
    for match in FILE_WITH_NAMES.finditer(page("architecture.md")):
        names = re.findall(r"`([\w.]+)`", match[2] or "")
        refs.append((match[1], names))
    return refs


def test_architecture_page_names_files() -> None:
    assert len(architecture_references()) > 20


@pytest.mark.parametrize(
    ("path", "names"), architecture_references(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_file_and_function_named_by_the_architecture_page_exists(
    path: str, names: list[str]
) -> None:
    candidates = [SRC / path, SRC.parent / path, ROOT / path]
    source_file = next((c for c in candidates if c.is_file()), None)
    assert source_file is not None, f"architecture.md names {path}, which is gone"
    source = source_file.read_text(encoding="utf-8")
    for dotted in names:
        name = dotted.rsplit(".", 1)[-1]
        assert re.search(rf"\b(def|class) {name}\b|^{name}\b", source, re.MULTILINE), (
            f"architecture.md says {path} has {dotted}, but it does not"
        )


def layout_files() -> list[str]:
    match = re.search(r"## Layout\n.*?```\n(.*?)```", page("architecture.md"), re.DOTALL)
    assert match, "the architecture page has no layout block under '## Layout'"
    return re.findall(r"\b([\w/]+\.py)\b", match[1])


def test_every_file_in_the_layout_exists() -> None:
    listed = layout_files()
    assert "_worker.py" in listed
    missing = sorted(name for name in listed if not (SRC / name).is_file())
    assert not missing, f"the layout lists files that do not exist: {missing}"


# -- snippets that are whole programs -----------------------------------------------------------

# Pages whose complete programs (a block that ends by running `main`) are executed here.
PAGES_WITH_PROGRAMS = [
    "index.md",
    "quickstart.md",
    "tasks.md",
    "locks.md",
    "leaders.md",
    "artifacts.md",
    "chunks.md",
    "periodic.md",
    "registry.md",
    "errors.md",
]


def python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page(name), re.DOTALL)


def whole_programs() -> list[tuple[str, str]]:
    return [
        (name, block)
        for name in PAGES_WITH_PROGRAMS
        for block in python_blocks(name)
        if re.search(r"^anyio\.run\(main\)$", block, re.MULTILINE)
    ]


def test_there_are_whole_programs_in_the_docs() -> None:
    assert {name for name, _ in whole_programs()} == set(PAGES_WITH_PROGRAMS)


@pytest.mark.timeout(120)  # longer than the default: its process's deadline is 60 s
@pytest.mark.slow
@pytest.mark.parametrize(("name", "program"), whole_programs(), ids=lambda v: str(v)[:20])
def test_whole_program_snippets_run(name: str, program: str, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(program, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, f"a program on {name} failed:\n{run.stdout}\n{run.stderr}"


def run_pytest_in(directory: Path, test_file: str) -> subprocess.CompletedProcess[str]:
    """pytest (asyncio auto mode, as the pages say) on one file of `directory`."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            "--rootdir",
            str(directory),
            test_file,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=directory,
        check=False,
    )


@pytest.mark.timeout(180)  # longer than the default: its pytest run's deadline is 120 s
@pytest.mark.slow
@pytest.mark.parametrize(("name", "count"), [("testing.md", 4), ("recipes/pytest.md", 4)])
def test_a_pages_app_module_and_tests_pass(name: str, count: int, tmp_path: Path) -> None:
    """The page's app module (``# shop/tasks.py``) and its tests, written out as files, pass
    under pytest, in one session."""
    blocks = python_blocks(name)
    app_module = next(b for b in blocks if b.startswith("# shop/tasks.py"))
    tests = [b for b in blocks if "def test_" in b]
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "shop" / "tasks.py").write_text(app_module, encoding="utf-8")
    (tmp_path / "test_shop.py").write_text("\n\n".join(tests), encoding="utf-8")
    run = run_pytest_in(tmp_path, "test_shop.py")
    assert run.returncode == 0, f"the tests of {name} failed:\n{run.stdout}\n{run.stderr}"
    assert f"{count} passed" in run.stdout, run.stdout


@pytest.mark.timeout(180)  # longer than the default: its pytest run's deadline is 120 s
@pytest.mark.slow
def test_the_fastapi_recipe_is_one_module_whose_tests_pass(tmp_path: Path) -> None:
    """The FastAPI recipe's blocks, in page order, make one module: the app, the lifespan, the
    endpoints and the tests (two TestClients, one after the other)."""
    (tmp_path / "test_service.py").write_text(
        "\n\n".join(python_blocks("recipes/fastapi.md")), encoding="utf-8"
    )
    run = run_pytest_in(tmp_path, "test_service.py")
    assert run.returncode == 0, f"the FastAPI recipe failed:\n{run.stdout}\n{run.stderr}"
    assert "2 passed" in run.stdout, run.stdout


@pytest.mark.timeout(120)  # longer than the default: its process's deadline is 60 s
@pytest.mark.slow
def test_the_sync_script_recipe_runs_in_one_process(tmp_path: Path) -> None:
    [program] = [b for b in python_blocks("recipes/sync-script.md") if "run_in_thread" in b]
    script = tmp_path / "report.py"
    script.write_text(program, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['page 1', 'page 2', 'page 3', 'page 4']"
