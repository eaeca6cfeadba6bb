"""`taskflow.__all__` is exactly the public surface: every public name of the package is listed,
nothing listed is missing, every item is documented, and each comes from a private module (so
the implementation can move without breaking imports). The same holds for `taskflow.abc`, which
exports every type a backend implementer needs."""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

import taskflow
import taskflow.abc

# Sub-packages and modules are reached as ``taskflow.memory`` etc.; they are not re-exported.
SUBMODULES_ALLOWED = {"abc", "memory", "redis", "postgres", "testing", "cli", "supervisor", "web"}


def public_names() -> set[str]:
    return {
        name
        for name, value in vars(taskflow).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_all_lists_every_public_name_and_nothing_else() -> None:
    assert sorted(taskflow.__all__) == sorted(public_names())
    assert len(taskflow.__all__) == len(set(taskflow.__all__)), "duplicates in __all__"


def test_no_stray_public_modules() -> None:
    modules = {
        name
        for name, value in vars(taskflow).items()
        if not name.startswith("_") and isinstance(value, types.ModuleType)
    }
    assert modules <= SUBMODULES_ALLOWED


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from taskflow import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(taskflow.__all__)


@pytest.mark.parametrize("name", sorted(taskflow.__all__))
def test_every_exported_item_is_documented(name: str) -> None:
    item = getattr(taskflow, name)
    target = item if inspect.isclass(item) or inspect.isfunction(item) else type(item)
    doc = inspect.getdoc(target) or ""
    assert doc.strip(), f"taskflow.{name} has no docstring"
    # A dataclass without a docstring gets its signature as __doc__: that is not documentation.
    assert not doc.startswith(f"{getattr(target, '__name__', name)}("), f"{name}: generated doc"


@pytest.mark.parametrize("name", sorted(taskflow.__all__))
def test_every_exported_item_is_importable_from_its_private_home(name: str) -> None:
    item = getattr(taskflow, name)
    home = getattr(item, "__module__", None) if inspect.isclass(item) else None
    if home is None:  # an instance such as NOT_GIVEN
        return
    assert home.startswith("taskflow._"), f"{name} is defined in {home}, not a private module"
    assert getattr(importlib.import_module(home), name) is item


def test_version() -> None:
    assert isinstance(taskflow.__version__, str) and taskflow.__version__


# -- taskflow.abc: every type an implementer needs, and nothing else --------------------------


def abc_public_names() -> set[str]:
    return {
        name
        for name, value in vars(taskflow.abc).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_abc_all_lists_every_public_name_and_nothing_else() -> None:
    assert sorted(taskflow.abc.__all__) == sorted(abc_public_names())
    assert len(taskflow.abc.__all__) == len(set(taskflow.abc.__all__)), "duplicates in __all__"


def test_abc_exports_the_contracts_components_and_the_types_they_speak() -> None:
    contracts = {
        "Broker", "Storage", "Coordination", "ArtifactStore", "ResultWaiters", "ReadCoalescer",
        "LATEST",
    }  # fmt: skip
    constants = {"LEASE_EXPIRED", "UPSTREAM_FAILED", "SKIPPED", "SUPERSEDED"}
    structs = {
        "TaskMessage", "Delivery", "Lease", "LeaseState", "Outcome", "OutcomeKind",
        "ProgressUpdate", "EnqueueResult", "TaskRecord", "TaskOutcome", "Event", "EventKind",
        "QueueStats", "LeaseInfo", "Versioned", "CancelResult", "ErrorInfo", "Progress",
        "TaskStatus", "ArtifactBlob", "LockMode", "LockRequest", "LockHold", "LockState",
        "LockHolder", "LockWaiter", "Checkpoint", "WorkerInfo", "FailedAttempt", "FailurePolicy",
    }  # fmt: skip
    codecs = {
        "encode_message", "decode_message", "encode_value", "decode_value",
        "encode_worker", "decode_worker", "encode_failed", "decode_failed",
    }  # fmt: skip
    assert set(taskflow.abc.__all__) == contracts | constants | structs | codecs


@pytest.mark.parametrize("name", sorted(taskflow.abc.__all__))
def test_every_abc_item_is_documented_and_comes_from_a_private_module(name: str) -> None:
    item = getattr(taskflow.abc, name)
    target = item if inspect.isclass(item) or inspect.isfunction(item) else type(item)
    assert (inspect.getdoc(target) or "").strip(), f"taskflow.abc.{name} has no docstring"
    if inspect.isclass(item) or inspect.isfunction(item):
        home = item.__module__
        assert home.startswith(("taskflow._", "taskflow.abc._")), f"{name} is defined in {home}"
        assert getattr(importlib.import_module(home), name) is item


def test_the_abc_names_taskflow_also_exports_are_the_same_objects() -> None:
    for name in set(taskflow.__all__) & set(taskflow.abc.__all__):
        assert getattr(taskflow, name) is getattr(taskflow.abc, name), name
