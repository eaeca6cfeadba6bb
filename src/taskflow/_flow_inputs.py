"""A flow node's inputs at run time: its parents' results, read in one batched call and passed
as keyword arguments (`TaskMessage.inputs`: parameter -> parent id, or a list of them).

A parent that ended done gives its result; one that did not (only a node whose policy is
`FailurePolicy.RUN` runs then, such as the join of a fan-out with ``partial=True``) gives a
`NodeFailed` value saying which parent and why. What does not live here: declaring inputs
(`_flow.py`), and when a node runs (the backend, `abc/_broker.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

from ._exceptions import ResultExpired, TaskFailed
from ._message import TaskRecord, TaskStatus, decode_value

__all__ = ["InputsUnavailable", "NodeFailed", "input_ids", "read_inputs"]


class NodeFailed(msgspec.Struct, frozen=True, kw_only=True):
    """What a node receives for a parent that ended without a value, in place of its result
    (only a node whose `FailurePolicy` is RUN runs then: a join with ``partial=True``).

    ``[r for r in results if not isinstance(r, NodeFailed)]`` keeps the values.

    Attributes:
        node: The parent's name in the flow (its task name if it has none).
        task_id: The parent's task id.
        status: How it ended (``"failed"``, ``"cancelled"``, ``"expired"``).
        error_type: Its error's type (``"KeyError"``, ``"Cancelled"``...).
        message: Its error's message.
    """

    node: str
    task_id: str
    status: str
    error_type: str
    message: str

    @property
    def reason(self) -> str:
        """``"<error type>: <message>"``, as the flow's roll-up words it."""
        return f"{self.error_type}: {self.message}"


class InputsUnavailable(Exception):
    """A parent's result cannot be read (its record is gone, its result expired or cannot be
    decoded): the node's run fails with this error, naming the parent."""


_MISSING: Final = "the record of parent {id} is not stored (cleaned up, or never stored)"


def input_ids(inputs: Mapping[str, str | list[str]]) -> list[str]:
    """Every parent id `inputs` names, each once, in order."""
    ids: dict[str, None] = {}
    for source in inputs.values():
        for task_id in [source] if isinstance(source, str) else source:
            ids[task_id] = None
    return list(ids)


def read_inputs(
    inputs: Mapping[str, str | list[str]], records: Sequence[TaskRecord | None]
) -> dict[str, Any]:
    """The keyword arguments `inputs` asks for, from the parents' records (read in the order
    of `input_ids`).

    Raises:
        InputsUnavailable: a parent's record is gone or its result cannot be read.
    """
    by_id = {record.id: record for record in records if record is not None}
    values: dict[str, Any] = {}
    for param, source in inputs.items():
        if isinstance(source, str):
            values[param] = _input_value(source, by_id)
        else:
            values[param] = [_input_value(task_id, by_id) for task_id in source]
    return values


def _input_value(task_id: str, by_id: Mapping[str, TaskRecord]) -> Any:
    record = by_id.get(task_id)
    if record is None:
        raise InputsUnavailable(_MISSING.format(id=task_id))
    if record.status is not TaskStatus.DONE:
        return _failed(record)
    try:
        if record.result_expired:
            raise ResultExpired(task_id)
        return None if record.result is None else decode_value(record.result)
    except (ResultExpired, TaskFailed, msgspec.DecodeError) as exc:
        name = record.node or record.name
        raise InputsUnavailable(f"the result of parent {name} ({task_id}): {exc}") from None


def _failed(record: TaskRecord) -> NodeFailed:
    error = record.error
    return NodeFailed(
        node=record.node or record.name,
        task_id=record.id,
        status=record.status.value,
        error_type=error.type if error is not None else record.status.value,
        message=error.message if error is not None else "ended without a value",
    )
