"""The task submission form: each registered task's parameters as a form schema (types from
its annotations), and a submitted form's values checked and converted the same way before the
task is sent.

The producer checks that arguments bind to the task's signature (`InvalidArguments`); a form
sends JSON values, so each one is also converted to its parameter's annotation (msgspec,
lenient: ``"5"`` for an ``int`` is 5, ISO text for a ``datetime`` is a datetime) and refused
with the parameter's name when it does not fit.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from .._exceptions import InvalidArguments
from .._task import TaskDefinition

__all__ = ["convert_arguments", "task_type"]

_SCALARS: dict[Any, str] = {bool: "bool", int: "int", float: "float", str: "str"}
_CONTAINERS: dict[Any, str] = {
    list: "list",
    tuple: "list",
    set: "list",
    frozenset: "list",
    Sequence: "list",
    dict: "dict",
    Mapping: "dict",
}
_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "keyword",
    inspect.Parameter.KEYWORD_ONLY: "keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}


def hints_of(definition: TaskDefinition) -> dict[str, Any]:
    """The task function's resolved annotations ({} when they cannot be resolved)."""
    try:
        return typing.get_type_hints(definition.fn)
    except Exception:  # names only importable under TYPE_CHECKING: no types to offer
        return {}


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` as (X, True); anything else as (hint, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1 and len(rest) < len(typing.get_args(hint)):
            return rest[0], True
    return hint, False


def _choices(hint: Any) -> list[Any] | None:
    if typing.get_origin(hint) is typing.Literal:
        return list(typing.get_args(hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return [member.value for member in hint]
    return None


def type_name(hint: Any) -> str:
    """The form input a parameter of annotation `hint` gets: int, float, str, bool, list,
    dict, or json (anything else, given as JSON)."""
    choices = _choices(hint)
    if choices:
        kinds = {type(c) for c in choices}
        return _SCALARS.get(kinds.pop(), "json") if len(kinds) == 1 else "json"
    if hint in _SCALARS:
        return _SCALARS[hint]
    return _CONTAINERS.get(typing.get_origin(hint) or hint, "json")


def _default(param: inspect.Parameter) -> Any:
    if param.default is inspect.Parameter.empty:
        return None
    return msgspec.to_builtins(param.default, enc_hook=repr)


def param_schema(param: inspect.Parameter, hints: Mapping[str, Any]) -> dict[str, Any]:
    """One form field: name, kind, input type, the annotation as text, required, default."""
    hint = hints.get(param.name, Any)
    inner, optional = _unwrap_optional(hint)
    annotation = "" if param.annotation is inspect.Parameter.empty else param.annotation
    return {
        "name": param.name,
        "kind": _KINDS[param.kind],
        "type": type_name(inner),
        "annotation": annotation if isinstance(annotation, str) else _text(hint),
        "required": param.default is inspect.Parameter.empty
        and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD),
        "optional": optional,
        "default": _default(param),
        "choices": _choices(inner),
    }


def _text(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def task_type(definition: TaskDefinition, default_queue: str) -> dict[str, Any]:
    """A registered task as the form offers it."""
    hints = hints_of(definition)
    return {
        "name": definition.name,
        "queue": definition.queue or default_queue,
        "doc": inspect.getdoc(definition.fn) or "",
        "params": [param_schema(p, hints) for p in definition.call_signature.parameters.values()],
    }


def _converted(name: str, value: Any, hint: Any) -> Any:
    if hint is Any or hint is inspect.Parameter.empty:
        return value
    try:
        return msgspec.convert(value, hint, strict=False)
    except (msgspec.ValidationError, TypeError) as exc:
        raise InvalidArguments(f"argument {name!r} ({_text(hint)}): {exc}") from exc


def convert_arguments(
    definition: TaskDefinition, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The form's values converted to the parameters' annotations, then checked to bind to
    the task's signature as the producer checks them.

    Raises:
        InvalidArguments: a value does not fit its annotation, or the values do not bind.
    """
    definition.check_arguments(tuple(args), dict(kwargs))
    bound = definition.call_signature.bind(*args, **kwargs)
    hints = hints_of(definition)
    for name, value in list(bound.arguments.items()):
        param = definition.call_signature.parameters[name]
        hint = hints.get(name, Any)
        if param.kind is param.VAR_POSITIONAL:
            bound.arguments[name] = tuple(_converted(name, v, hint) for v in value)
        elif param.kind is param.VAR_KEYWORD:
            bound.arguments[name] = {k: _converted(k, v, hint) for k, v in value.items()}
        else:
            bound.arguments[name] = _converted(name, value, hint)
    return bound.args, bound.kwargs
