"""`Flow`: a graph of tasks declared in code and stored whole in one backend call.

``flow = app.flow("nightly")``; ``a = flow.add(load, day)``; ``b = flow.add(transform,
after=[a], inputs={"rows": a})``; ``handle = await flow.submit()``. `Flow.add` checks each node
as it is added (the task is known, its arguments bind with its inputs, its inputs name parents
and parameters it has); `Flow.submit` checks the whole graph (no cycle: edges may be added
after the fact with `FlowNode.after`), then builds one `TaskMessage` per node (ids from
``broker.new_task_id``, a fresh flow id, each node's parents in `waits_for` and its children in
`children`) and stores them all in one `Broker.enqueue` call: the backend makes a node
claimable when its last parent ends, in the call that stores that end (see ``docs/flows.md``).

What does not live here: the handle and the roll-up (`_flow_status.py`), a node's inputs at
run time (`_flow_inputs.py`), fan-outs (`_fan_out.py`), and the backends' side
(`abc/_broker.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol

import msgspec

from ._exceptions import FlowCycle, InvalidFlow, InvalidOption
from ._flow_status import FlowApp, FlowHandle, SyncFlowHandle
from ._message import FailurePolicy, TaskMessage
from ._options import NO_OPTIONS, TaskOptions, given
from ._task import PreparedTask, TaskDefinition, TaskFunc

__all__ = [
    "Flow",
    "FlowBuildApp",
    "FlowNode",
    "FlowSender",
    "check_inputs",
    "find_cycle",
    "node_label",
    "policy_of",
]

# Options that would make a node's id differ from the one its children wait for.
_REFUSED_OPTIONS: Final = ("task_id", "dedup_key")


class FlowSender(Protocol):
    """How a flow builds its messages: the app's `Sender` (`_sending.py`)."""

    def definition(self, task_name: str) -> TaskDefinition:
        """The task registered as `task_name` (`UnknownTaskError` if none)."""
        ...

    def build_message(
        self,
        definition: TaskDefinition,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: TaskOptions,
        now: float,
    ) -> TaskMessage:
        """The message of one call, as `add_task` builds it (`EncodeError` if it cannot)."""
        ...


class FlowBuildApp(FlowApp, Protocol):
    """What a flow uses of its app (a `QueueTasks`) to build and store its messages."""

    @property
    def sender(self) -> FlowSender:
        """The app's send path."""
        ...


class FlowNode:
    """One node of a `Flow`, made by `Flow.add`: pass it in another node's ``after`` and
    ``inputs``.

    Attributes:
        name: Its name, unique in its flow (by default the task's name after its last dot;
            ``"load#2"`` for the second node of task ``load``).
        task_name: The registered name of its task.
        task_id: Its task's id once the flow is submitted (None before).
    """

    __slots__ = (
        "after_failure",
        "args",
        "definition",
        "flow",
        "inputs",
        "kwargs",
        "name",
        "options",
        "parents",
        "task_id",
    )

    def __init__(
        self,
        flow: Flow,
        name: str,
        call: PreparedTask[Any],
        after_failure: FailurePolicy | None,
    ) -> None:
        self.flow = flow
        self.name = name
        self.definition = call.definition
        self.args = call.args
        self.kwargs = call.kwargs
        self.options = call.options
        self.after_failure = after_failure
        self.parents: list[FlowNode] = []
        self.inputs: dict[str, list[FlowNode] | FlowNode] = {}
        self.task_id: str | None = None

    @property
    def task_name(self) -> str:
        """The registered name of its task."""
        return self.definition.name

    def after(self, *parents: FlowNode) -> FlowNode:
        """Make this node wait for `parents` too (an edge added after the fact); returns it.

        Raises:
            InvalidFlow: a parent is not a node of this flow, or the flow was submitted.
        """
        self.flow.check_open_for_edges()
        for parent in parents:
            self.flow.check_own(parent, f"a parent of node {self.name!r}")
            if parent not in self.parents:
                self.parents.append(parent)
        return self

    def __repr__(self) -> str:
        return f"FlowNode({self.name!r}, task={self.task_name!r})"


class Flow:
    """A graph of tasks to store and run as one; made by ``app.flow(name)``.

    Args:
        app: The app whose tasks it runs.
        name: A label for people (shown by the handle and ``taskflow flow``).
        after_failure: What a node does when a parent ends without a value, unless the node
            says otherwise (`FailurePolicy.FAIL` by default: it fails, naming the parent).
    """

    __slots__ = ("_app", "_nodes", "_submitted", "after_failure", "name")

    def __init__(
        self,
        app: FlowBuildApp,
        name: str,
        *,
        after_failure: FailurePolicy | str = FailurePolicy.FAIL,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidFlow(f"a flow's name is a non-empty string, got {name!r}")
        self._app = app
        self.name = name
        self.after_failure = policy_of(after_failure, "the flow")
        self._nodes: dict[str, FlowNode] = {}
        self._submitted = False

    @property
    def nodes(self) -> Mapping[str, FlowNode]:
        """The nodes by name, in the order they were added."""
        return dict(self._nodes)

    def add(
        self,
        task: TaskFunc[..., Any] | PreparedTask[Any] | str,
        /,
        *args: Any,
        after: Iterable[FlowNode] = (),
        inputs: Mapping[str, FlowNode | Sequence[FlowNode]] | None = None,
        name: str | None = None,
        after_failure: FailurePolicy | str | None = None,
        **kwargs: Any,
    ) -> FlowNode:
        """Add a node running `task` with `args` and `kwargs`, after the nodes in `after`.

        ``flow.add(load, day)``; ``flow.add(report, after=[b], inputs={"rows": b})``: the
        node starts once every parent ended done, and gets parent ``b``'s result as its
        ``rows`` argument (a list of nodes gives the list of their results, in that order).
        Options go on a prepared call: ``flow.add(load.options(queue="io").prepare(day))``
        (checked by mypy like ``add_task``); a task parameter named ``after``, ``inputs``,
        ``name`` or ``after_failure`` is passed that way too.

        Args:
            task: A task (`TaskFunc`), a prepared call (``task.prepare(...)``, which takes no
                more arguments here), or a registered task's name.
            after: The node's parents.
            inputs: Parameter -> the parent (or list of parents) whose result it receives.
            name: The node's name, unique in the flow (default: the task's name after its
                last dot, numbered from the second node of one task on: ``"load#2"``).
            after_failure: What the node does when a parent ends without a value (default:
                the flow's).

        Raises:
            UnknownTaskError: `task` is a name no task of the app has.
            InvalidArguments: the arguments (with the inputs) do not bind to the task.
            InvalidFlow: a parent or input is not a node of this flow, an input is not a
                parent or not a parameter of the task, the name is taken, a refused option
                (``task_id``, ``dedup_key``), or the flow was submitted already.
        """
        self.check_open_for_edges()
        call = self._prepared(task, args, kwargs)
        node_name = self._node_name(name, node_label(call.definition.name))
        for option in _REFUSED_OPTIONS:
            if given(getattr(call.options, option), None) is not None:
                raise InvalidFlow(
                    f"node {node_name!r}: the {option} option is refused in a flow (a node's "
                    "id must be the one its children wait for); leave it out"
                )
        policy = None if after_failure is None else policy_of(after_failure, f"node {node_name!r}")
        node = FlowNode(self, node_name, call, policy)
        node.after(*after)
        node.inputs = self._inputs(node, inputs or {})
        check_inputs(call.definition, call.args, call.kwargs, node.inputs, f"node {node_name!r}")
        self._nodes[node_name] = node
        return node

    async def submit(self) -> FlowHandle:
        """Check the graph and store every node in one backend call; the flow's handle.

        Nodes without parents are claimable at once; the others wait (`TaskStatus.WAITING`)
        until their parents end.

        Raises:
            FlowCycle: the graph has a circle (the message names it).
            InvalidFlow: the flow is empty, or was submitted already.
            EncodeError: an argument of a node cannot be encoded.
        """
        self._check()
        app = self._app
        await app.lifecycle.ensure_open()
        now = app.clock.time()
        flow_id = app.broker.new_task_id(app.config.default_queue)
        messages = self._messages(flow_id, now)
        await app.broker.enqueue(messages, now=now)
        self._submitted = True
        tasks = {node: message.id for node, message in zip(self._nodes, messages, strict=True)}
        return FlowHandle(app, flow_id, name=self.name, tasks=tasks)

    def submit_sync(self) -> SyncFlowHandle:
        """`submit` from synchronous code (on the loop that owns the app, as ``add_task_sync``).

        Raises:
            FlowCycle, InvalidFlow, EncodeError: as `submit`.
        """
        handle = self._app.lifecycle.call_sync(self.submit)
        return SyncFlowHandle(handle)

    # -- checks --------------------------------------------------------------------------

    def check_open_for_edges(self) -> None:
        """Raises `InvalidFlow` once the flow is submitted (its graph is stored)."""
        if self._submitted:
            raise InvalidFlow(
                f"flow {self.name!r} was submitted already: its graph is stored and cannot "
                "change; make a new flow with app.flow(...)"
            )

    def check_own(self, node: object, what: str) -> None:
        """Raises `InvalidFlow` unless `node` is a node of this flow."""
        if not isinstance(node, FlowNode):
            raise InvalidFlow(f"{what} must be a node this flow's add() returned, got {node!r:.60}")
        if node.flow is not self:
            raise InvalidFlow(
                f"{what} is node {node.name!r} of flow {node.flow.name!r}, not of flow "
                f"{self.name!r}: a flow's edges stay inside it"
            )

    def _check(self) -> None:
        self.check_open_for_edges()
        if not self._nodes:
            raise InvalidFlow(f"flow {self.name!r} has no nodes: add some with flow.add(...)")
        cycle = find_cycle(self._nodes.values())
        if cycle is not None:
            raise FlowCycle(
                f"flow {self.name!r} has a cycle: {' -> '.join(cycle)}; no node of it could "
                "ever start. Remove one of these edges"
            )

    def _prepared(
        self,
        task: TaskFunc[..., Any] | PreparedTask[Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> PreparedTask[Any]:
        if isinstance(task, PreparedTask):
            if args or kwargs:
                raise InvalidFlow(
                    f"a prepared call of {task.definition.name!r} carries its arguments: "
                    "flow.add(task.prepare(1, 2)), not flow.add(task.prepare(), 1, 2)"
                )
            return task
        if isinstance(task, TaskFunc):
            definition = task.definition
        elif isinstance(task, str):
            definition = self._app.sender.definition(task)
        else:
            raise InvalidFlow(
                "flow.add takes a task, a prepared call (task.options(...).prepare(...)) or a "
                f"task's name, got {task!r:.60}"
            )
        return PreparedTask(definition, args, kwargs, NO_OPTIONS)

    def _node_name(self, name: str | None, task_name: str) -> str:
        if name is not None:
            if not isinstance(name, str) or not name:
                raise InvalidFlow(f"a node's name is a non-empty string, got {name!r}")
            if name in self._nodes:
                raise InvalidFlow(f"flow {self.name!r} has a node named {name!r} already")
            return name
        if task_name not in self._nodes:
            return task_name
        n = 2
        while f"{task_name}#{n}" in self._nodes:
            n += 1
        return f"{task_name}#{n}"

    def _inputs(
        self, node: FlowNode, inputs: Mapping[str, FlowNode | Sequence[FlowNode]]
    ) -> dict[str, list[FlowNode] | FlowNode]:
        checked: dict[str, list[FlowNode] | FlowNode] = {}
        for param, source in inputs.items():
            sources = [source] if isinstance(source, FlowNode) else list(source)
            for parent in sources:
                self.check_own(parent, f"input {param!r} of node {node.name!r}")
                if parent not in node.parents:
                    raise InvalidFlow(
                        f"input {param!r} of node {node.name!r} names node {parent.name!r}, "
                        f"which is not among its parents: add it to after=[...] so the node "
                        "waits for its result"
                    )
            checked[param] = source if isinstance(source, FlowNode) else sources
        return checked

    # -- building ------------------------------------------------------------------------

    def _messages(self, flow_id: str, now: float) -> list[TaskMessage]:
        """One message per node, parents and children linked by id."""
        app = self._app
        base: dict[str, TaskMessage] = {}
        for node in self._nodes.values():
            message = app.sender.build_message(
                node.definition, node.args, node.kwargs, node.options, now
            )
            node.task_id = message.id
            base[node.name] = message
        children: dict[str, list[tuple[str, str]]] = {name: [] for name in self._nodes}
        for node in self._nodes.values():
            for parent in node.parents:
                children[parent.name].append((base[node.name].id, base[node.name].queue))
        return [
            msgspec.structs.replace(
                base[node.name],
                flow_id=flow_id,
                node=node.name,
                waits_for=[_id(p) for p in node.parents],
                children=children[node.name],
                after_failure=node.after_failure or self.after_failure,
                inputs={
                    param: _id(src) if isinstance(src, FlowNode) else [_id(p) for p in src]
                    for param, src in node.inputs.items()
                },
            )
            for node in self._nodes.values()
        ]

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, nodes={len(self._nodes)})"


def _id(node: FlowNode) -> str:
    assert node.task_id is not None  # set by _messages before the links are made
    return node.task_id


def node_label(task_name: str) -> str:
    """The default node name of a task: its name after the last dot (``"etl.load"`` ->
    ``"load"``), short enough for a view of the graph."""
    return task_name.rsplit(".", 1)[-1]


def policy_of(value: FailurePolicy | str, owner: str) -> FailurePolicy:
    """`value` as a `FailurePolicy` (its value as a string works too).

    Raises:
        InvalidOption: not a policy.
    """
    try:
        return FailurePolicy(value)
    except ValueError:
        names = ", ".join(repr(p.value) for p in FailurePolicy)
        raise InvalidOption(
            f"after_failure of {owner} must be a FailurePolicy ({names}), got {value!r}"
        ) from None


def check_inputs(
    definition: TaskDefinition,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    inputs: Mapping[str, object],
    what: str,
) -> None:
    """Check that a task called with `args` and `kwargs` and given its `inputs` as keyword
    arguments at run time binds: each input names a parameter the task has (or takes
    ``**kwargs``) and not given already, and the whole call binds (the producer's check).

    Raises:
        InvalidFlow: an input names a parameter the task lacks, or one given already.
        InvalidArguments: the call does not bind.
    """
    params = definition.call_signature.parameters
    open_keywords = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for param in inputs:
        if param in kwargs:
            raise InvalidFlow(
                f"{what}: argument {param!r} is given and is an input too; keep one of them"
            )
        if param not in params and not open_keywords:
            raise InvalidFlow(
                f"{what}: input {param!r} is not a parameter of task {definition.name!r} "
                f"(it takes {', '.join(params) or 'nothing'}): name one of its parameters"
            )
        if param in params and params[param].kind is params[param].POSITIONAL_ONLY:
            raise InvalidFlow(
                f"{what}: input {param!r} is a positional-only parameter of task "
                f"{definition.name!r}; inputs are passed by keyword"
            )
    definition.check_arguments(args, {**kwargs, **dict.fromkeys(inputs)})


def find_cycle(nodes: Iterable[FlowNode]) -> list[str] | None:
    """The names along one circle of the graph, in the direction the work flows and ending
    where it starts, or None. Iterative (a chain of 10,000 nodes is a fine flow)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in nodes:
        if start.name in state:
            continue
        path: list[FlowNode] = [start]
        pending: list[Iterator[FlowNode]] = [iter(start.parents)]
        state[start.name] = 1
        while pending:
            parent = next(pending[-1], None)
            if parent is None:
                state[path.pop().name] = 2
                pending.pop()
            elif state.get(parent.name) == 1:
                names = [n.name for n in path]
                circle = [*names[names.index(parent.name) :], parent.name]
                return list(reversed(circle))
            elif parent.name not in state:
                state[parent.name] = 1
                path.append(parent)
                pending.append(iter(parent.parents))
    return None
