"""The package's shape: imports run one way, and no module reaches into another's private parts.

Both are read from the source with `ast`, so imports under ``if TYPE_CHECKING:`` and inside
functions count: a type-only import that closes a circle is still a circle for the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "taskflow"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(name: str, path: Path) -> set[str]:
    """The package's modules that `name` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_type_checking_imports() -> None:
    # `_task.py` imports the result handles only for type checking.
    assert "taskflow._client" in GRAPH["taskflow._task"]


# Packages not held to it yet: none (the Redis package's modules import one way too).
NOT_CHECKED_YET: tuple[str, ...] = ()


def checked(module: str) -> bool:
    return not any(module == p or module.startswith(p + ".") for p in NOT_CHECKED_YET)


def test_the_import_graph_has_no_circle() -> None:
    graph = {m: {t for t in deps if checked(t)} for m, deps in GRAPH.items() if checked(m)}
    cycle = find_cycle(graph)
    assert cycle is None, "an import circle (type-only imports count): " + " -> ".join(cycle or [])


# The core's layers, top to bottom: a module may import only modules of its own layer or below.
# The app builds everything; the parts below see it through small protocols, never import it.
CORE_LAYERS = [
    ["taskflow._app"],
    ["taskflow._running", "taskflow._sending"],
    ["taskflow._starter"],
    ["taskflow._worker"],
    [
        "taskflow._claimer",
        "taskflow._recorder",
        "taskflow._deadlines",
        "taskflow._outcome",
        "taskflow._artifact_sweep",
    ],
    ["taskflow._executor"],
    ["taskflow._task", "taskflow._client", "taskflow._context"],  # handles, TaskContext
    ["taskflow._run", "taskflow._lifecycle", "taskflow._artifacts"],
    ["taskflow._options", "taskflow._artifact_records", "taskflow._artifact_sources"],
]


def test_the_core_layers_are_the_modules_that_exist() -> None:
    assert all(module in MODULES for layer in CORE_LAYERS for module in layer)


@pytest.mark.parametrize(
    ("index", "module"), [(i, m) for i, layer in enumerate(CORE_LAYERS) for m in layer]
)
def test_core_imports_point_down(index: int, module: str) -> None:
    above = {m for layer in CORE_LAYERS[:index] for m in layer}
    upward = sorted(GRAPH[module] & above)
    assert not upward, f"{module} imports {upward}, which sit above it in the core's layers"


# -- private members -----------------------------------------------------------------------------

# Where a module of the package must not touch a private member another module defines. The
# backends (redis, postgres, memory, their private packages) join as their packages settle.
CHECKED = [
    path
    for path in sorted(PACKAGE.rglob("*.py"))
    if path.parent in (PACKAGE, PACKAGE / "supervisor", PACKAGE / "cli")
    and path.name not in ("redis.py", "postgres.py")
]
# Public API of named tuples, spelled with an underscore so it cannot clash with a field.
ALLOWED = {"_replace", "_asdict", "_fields", "_make"}


def defined_names(tree: ast.AST) -> set[str]:
    """Every name a module defines: functions, classes, assignments, attributes of `self`."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
    return names


def test_the_private_member_check_sees_a_foreign_use(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f(app):\n    return app._tasks, app._own\n\n_own = 1\n")
    assert [use.rsplit(": ", 1)[1] for use in foreign_private_uses_at(module)] == ["app._tasks"]


def foreign_private_uses_at(path: Path) -> list[str]:
    """Each ``x._name`` in `path` (x not self or cls) whose name the module does not define."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = defined_names(tree)
    return [
        f"{path.name}:{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and node.attr not in ALLOWED
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        and node.attr not in own
    ]


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_touches_another_modules_private_members(path: Path) -> None:
    uses = foreign_private_uses_at(path)
    assert not uses, (
        "private members of other modules (give them a public name on a private module): "
        + ", ".join(uses)
    )
