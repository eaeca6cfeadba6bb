"""``ctx.fan_out``: a running task splits its work into shards and a join, stored in one
`Broker.enqueue` call, and its run ends waiting for the join (`OutcomeKind.WAIT`).

The shards' ids are derived from the task's id (`derived_task_id(task_id, "shard:<i>",
queue)`), and so is the join's (``"join"``): a run repeated after a crash enqueues the same ids
and the backend's id dedup keeps the first ones, so nothing is added twice (a re-run must fan
out the same shards: the first fan-out's are kept). A hedge copy's fan-out uses its task's id,
so it stores nothing new either. The join waits for
every shard (`waits_for`), gets their results in shard order as its first parameter
(`inputs`), runs on the fanning task's queue, and hands its outcome to the fanning task
(`outcome_to`): the fanning task ends as its join ends, and a flow node's children see the
join's result as the node's. With ``partial=True`` the join runs after failed shards too
(`FailurePolicy.RUN`) and gets a `NodeFailed` in their place; otherwise the first shard that
fails for good fails the join, with the shard's reason (`FailurePolicy.FAIL`).

The built-in join (`JOIN_TASK`, run by every worker without registration) returns the list of
results, None for a failed shard. What does not live here: `TaskContext` (`_context.py`), how
the worker turns the run's end into the WAIT outcome (`_outcome.py`), the backend's side.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from ._clock import Clock
from ._exceptions import InvalidFlow
from ._flow import FlowSender, check_inputs, node_label
from ._flow_inputs import NodeFailed
from ._ids import derived_task_id
from ._message import FailurePolicy, TaskMessage
from ._options import NO_OPTIONS, TaskOptions
from ._run import Run
from ._task import TaskDefinition, TaskFunc, make_definition
from .abc import Broker

__all__ = ["BUILTIN_TASKS", "JOIN_TASK", "FanOut", "collect_results"]

JOIN_TASK: Final = "taskflow.join"
"""The name of the built-in join (`collect_results`): every worker runs it."""


def collect_results(results: list[Any]) -> list[Any]:
    """The built-in join: the shards' results in shard order (None for a failed shard, with
    ``partial=True``; pass a join of your own to see why it failed: it gets `NodeFailed`)."""
    return [None if isinstance(value, NodeFailed) else value for value in results]


BUILTIN_TASKS: Final[Mapping[str, TaskDefinition]] = {
    JOIN_TASK: make_definition(
        collect_results, name=JOIN_TASK, retry_on=None, dont_retry_on=None, defaults={}
    )
}
"""Tasks every worker runs without registration, by name."""


class FanOut:
    """The fan-out of one run (one per run: the shards' ids are numbered from the task's id).

    Args:
        sender: Builds the messages as ``add_task`` does (the app's `Sender`).
        broker: Where they are stored.
        clock: The app's clock.
        message: The running task's message.
        run: The running task's run (`Run.join_id` is set once it has fanned out).
    """

    __slots__ = ("_broker", "_clock", "_message", "_run", "_sender")

    def __init__(
        self, sender: FlowSender, broker: Broker, clock: Clock, message: TaskMessage, run: Run
    ) -> None:
        self._sender = sender
        self._broker = broker
        self._clock = clock
        self._message = message
        self._run = run

    async def start(
        self,
        shard_task: TaskFunc[..., Any] | str,
        shards: Iterable[Any],
        *,
        join: TaskFunc[..., Any] | str | None = None,
        partial: bool = False,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """Store the shards and the join in one call; the join's id. See `TaskContext.fan_out`.

        Raises:
            InvalidFlow: the run fanned out already, or the join takes no parameter.
            UnknownTaskError: a task named by a string is not registered.
            InvalidArguments: a shard's arguments do not bind.
            EncodeError: a shard's argument cannot be encoded.
        """
        run, message = self._run, self._message
        if run.join_id is not None:
            raise InvalidFlow(
                f"task {message.name!r} ({message.id}) fanned out already in this run: one "
                "fan-out per run (put more shards in it, or fan out from a shard)"
            )
        now = self._clock.time()
        shard_def = self._definition(shard_task)
        join_def = BUILTIN_TASKS[JOIN_TASK] if join is None else self._definition(join)
        join_id = derived_task_id(self._owner, "join", message.queue)
        shard_messages = self._shards(shard_def, list(shards), dict(kwargs or {}), join_id, now)
        join_message = self._join(join_def, join_id, [m.id for m in shard_messages], partial, now)
        await self._broker.enqueue([*shard_messages, join_message], now=now)
        run.join_id = join_id
        return join_id

    def _definition(self, task: TaskFunc[..., Any] | str) -> TaskDefinition:
        if isinstance(task, TaskFunc):
            return task.definition
        if isinstance(task, str):
            return BUILTIN_TASKS.get(task) or self._sender.definition(task)
        raise InvalidFlow(f"ctx.fan_out takes a task or a task's name, got {task!r:.60}")

    def _flow_fields(self, key: str) -> tuple[str, str]:
        """The flow id the new tasks belong to (the fanning task's, or its own id: a task
        fanning out outside a flow starts one), and the node name for `key`."""
        message = self._message
        owner = self._owner
        return message.flow_id or owner, f"{message.node or node_label(message.name)}.{key}"

    @property
    def _owner(self) -> str:
        """The task the fan-out belongs to: this one, or for a hedge copy the task it copies
        (so the copy's fan-out is the same ids as its task's, stored once, and its join's
        outcome goes to the task; the copy itself is then superseded)."""
        message = self._message
        return message.outcome_to if message.copy and message.outcome_to else message.id

    def _shards(
        self,
        definition: TaskDefinition,
        items: list[Any],
        kwargs: dict[str, Any],
        join_id: str,
        now: float,
    ) -> list[TaskMessage]:
        message = self._message
        out = []
        for index, item in enumerate(items):
            definition.check_arguments((item,), kwargs)
            built = self._sender.build_message(definition, (item,), kwargs, NO_OPTIONS, now)
            flow_id, node = self._flow_fields(f"shard[{index}]")
            out.append(
                msgspec.structs.replace(
                    built,
                    id=derived_task_id(self._owner, f"shard:{index}", built.queue),
                    flow_id=flow_id,
                    node=node,
                    parent_id=self._owner,
                    children=[(join_id, message.queue)],
                )
            )
        return out

    def _join(
        self,
        definition: TaskDefinition,
        join_id: str,
        shard_ids: list[str],
        partial: bool,
        now: float,
    ) -> TaskMessage:
        message = self._message
        param = _results_parameter(definition)
        check_inputs(definition, (), {}, {param: shard_ids}, f"the join of {message.name!r}")
        options = TaskOptions(queue=message.queue)  # outcome_to stays in one queue
        built = self._sender.build_message(definition, (), {}, options, now)
        flow_id, node = self._flow_fields("join")
        return msgspec.structs.replace(
            built,
            id=join_id,
            flow_id=flow_id,
            node=node,
            parent_id=self._owner,
            waits_for=shard_ids,
            after_failure=FailurePolicy.RUN if partial else FailurePolicy.FAIL,
            inputs={param: shard_ids},
            outcome_to=self._owner,
        )


def _results_parameter(definition: TaskDefinition) -> str:
    """The join's first parameter (its `TaskContext` aside): where the results go."""
    for param in definition.call_signature.parameters.values():
        if param.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            return param.name
    raise InvalidFlow(
        f"join task {definition.name!r} takes no parameter for the shards' results: give it "
        "one (def join(results: list) -> ...), the first one gets the list"
    )
