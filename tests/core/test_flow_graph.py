"""Declaring a flow and the checks made before anything is stored: unknown tasks, arguments that
do not bind (with the inputs), inputs naming a node that is not a parent or a parameter the
task lacks, cycles (edges added after the fact), nodes of another flow, refused options,
policies; and the roll-up a flow's records add up to (shared with orders). Nothing here needs
a backend's flow support: a refused flow never reaches the backend."""

from __future__ import annotations

from typing import Any

import pytest

from taskflow import (
    Counts,
    ErrorInfo,
    FailurePolicy,
    FlowCycle,
    FlowState,
    InvalidArguments,
    InvalidFlow,
    InvalidOption,
    QueueTasks,
    TaskContext,
    TaskRecord,
    TaskStatus,
    UnknownTaskError,
    summarize,
)
from taskflow._flow_status import flow_status
from taskflow.abc import SKIPPED, UPSTREAM_FAILED

app = QueueTasks(name="graph")


@app.task
async def load(day: str) -> list[int]:
    return [1, 2, 3]


@app.task
async def transform(ctx: TaskContext, rows: list[int], scale: int = 1) -> int:
    return sum(rows) * scale


@app.task
async def report(totals: list[int], *, title: str = "") -> str:
    return f"{title}{totals}"


@app.task
async def anything(**values: Any) -> dict[str, Any]:
    return values


def test_nodes_get_the_tasks_name_numbered_from_the_second_one() -> None:
    flow = app.flow("nightly")
    a = flow.add(load, "2026-12-01")
    b = flow.add(load, "2026-12-02")
    c = flow.add("load", "2026-12-03", name="third")
    assert [a.name, b.name, c.name] == ["load", "load#2", "third"]
    assert list(flow.nodes) == ["load", "load#2", "third"]
    assert a.task_name == "load" and a.task_id is None


def test_a_taken_node_name_is_refused() -> None:
    flow = app.flow("nightly")
    flow.add(load, "d", name="x")
    with pytest.raises(InvalidFlow, match="has a node named 'x' already"):
        flow.add(load, "d", name="x")


def test_an_unknown_task_name_is_refused_with_the_registered_ones() -> None:
    flow = app.flow("nightly")
    with pytest.raises(UnknownTaskError, match=r"no task named 'lod'.*registered: "):
        flow.add("lod", "d")


def test_arguments_that_do_not_bind_are_refused_as_for_add_task() -> None:
    flow = app.flow("nightly")
    with pytest.raises(InvalidArguments, match="task 'load' takes"):
        flow.add(load)
    with pytest.raises(InvalidArguments, match="unexpected keyword argument 'days'"):
        flow.add(load, "d", days="x")


def test_inputs_fill_parameters_and_the_rest_must_bind() -> None:
    flow = app.flow("nightly")
    a = flow.add(load, "d")
    b = flow.add(transform, after=[a], inputs={"rows": a}, scale=2)
    assert b.inputs == {"rows": a}
    # Without the input, `rows` is missing.
    with pytest.raises(InvalidArguments, match="missing a required argument: 'rows'"):
        flow.add(transform, after=[a])


def test_an_input_must_be_a_parent() -> None:
    flow = app.flow("nightly")
    a = flow.add(load, "d")
    with pytest.raises(InvalidFlow, match="names node 'load', which is not among its parents"):
        flow.add(transform, inputs={"rows": a})


def test_an_input_must_name_a_parameter_of_the_task() -> None:
    flow = app.flow("nightly")
    a = flow.add(load, "d")
    with pytest.raises(InvalidFlow, match="input 'row' is not a parameter of task 'transform'"):
        flow.add(transform, after=[a], inputs={"row": a})
    # A task taking **kwargs takes any name.
    node = flow.add(anything, after=[a], inputs={"whatever": a})
    assert list(node.inputs) == ["whatever"]


def test_an_input_given_as_an_argument_too_is_refused() -> None:
    flow = app.flow("nightly")
    a = flow.add(load, "d")
    with pytest.raises(InvalidFlow, match="'rows' is given and is an input too"):
        flow.add(transform, after=[a], inputs={"rows": a}, rows=[1])


def test_a_list_of_parents_gives_a_list_input() -> None:
    flow = app.flow("nightly")
    parts = [flow.add(transform, [i]) for i in range(3)]
    node = flow.add(report, after=parts, inputs={"totals": parts}, title="t")
    assert node.inputs == {"totals": parts}
    assert node.parents == parts


def test_the_context_parameter_is_not_an_input() -> None:
    flow = app.flow("nightly")
    a = flow.add(load, "d")
    with pytest.raises(InvalidFlow, match="input 'ctx' is not a parameter"):
        flow.add(transform, after=[a], inputs={"ctx": a, "rows": a})


def test_a_node_of_another_flow_is_refused() -> None:
    one, two = app.flow("one"), app.flow("two")
    a = one.add(load, "d")
    with pytest.raises(InvalidFlow, match="node 'load' of flow 'one', not of flow 'two'"):
        two.add(transform, [1], after=[a])
    with pytest.raises(InvalidFlow, match="must be a node this flow's add"):
        two.add(transform, [1], after=["load"])  # type: ignore[list-item]


async def test_a_cycle_made_by_an_edge_added_after_the_fact_is_refused_at_submit() -> None:
    flow = app.flow("loop")
    a = flow.add(load, "d", name="a")
    b = flow.add(transform, [1], after=[a], name="b")
    c = flow.add(transform, [2], after=[b], name="c")
    a.after(c)
    with pytest.raises(FlowCycle, match=r"cycle: a -> b -> c -> a"):
        await flow.submit()
    assert not app.is_open  # refused before the backend was touched


async def test_a_node_after_itself_is_a_cycle() -> None:
    flow = app.flow("self")
    a = flow.add(load, "d")
    a.after(a)
    with pytest.raises(FlowCycle, match="load -> load"):
        await flow.submit()


def test_a_long_chain_is_checked_without_recursion() -> None:
    from taskflow._flow import find_cycle

    flow = app.flow("chain")
    previous = flow.add(transform, [0])
    for i in range(5000):
        previous = flow.add(transform, [i], after=[previous])
    assert find_cycle(flow.nodes.values()) is None


async def test_an_empty_flow_is_refused() -> None:
    with pytest.raises(InvalidFlow, match="has no nodes"):
        await app.flow("empty").submit()


def test_prepared_calls_carry_options_and_take_no_more_arguments() -> None:
    flow = app.flow("nightly")
    node = flow.add(load.options(queue="io", priority=3).prepare("d"))
    assert node.options.queue == "io"
    with pytest.raises(InvalidFlow, match="carries its arguments"):
        flow.add(load.prepare("d"), "e")


@pytest.mark.parametrize("option", ["task_id", "dedup_key"])
def test_options_that_change_a_nodes_id_are_refused(option: str) -> None:
    flow = app.flow("nightly")
    options: dict[str, Any] = {option: "x"}
    call = load.options(**options).prepare("d")
    with pytest.raises(InvalidFlow, match=f"the {option} option is refused in a flow"):
        flow.add(call)


def test_policies_by_value_or_name_and_bad_ones_refused() -> None:
    flow = app.flow("nightly", after_failure="skip")
    assert flow.after_failure is FailurePolicy.SKIP
    a = flow.add(load, "d")
    node = flow.add(transform, [1], after=[a], after_failure=FailurePolicy.RUN)
    assert node.after_failure is FailurePolicy.RUN
    with pytest.raises(InvalidOption, match="after_failure of node 'transform#2' must be"):
        flow.add(transform, [1], after=[a], after_failure="retry")
    with pytest.raises(InvalidOption, match="after_failure of the flow"):
        app.flow("x", after_failure="never")


def test_a_flow_needs_a_name() -> None:
    with pytest.raises(InvalidFlow, match="non-empty string"):
        app.flow("")


# -- the roll-up -------------------------------------------------------------------------------


def record(
    task_id: str,
    node: str,
    status: TaskStatus,
    *,
    error: ErrorInfo | None = None,
    attempts: int = 0,
    copy: bool = False,
) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        name=node.split("#")[0],
        queue="default",
        status=status,
        node=node,
        error=error,
        attempts=attempts,
        copy=copy,
        flow_id="f1",
    )


def test_the_roll_up_counts_states_and_puts_causes_before_their_followers() -> None:
    upstream = ErrorInfo(UPSTREAM_FAILED, "load (a) failed: KeyError: 'day'")
    records = [
        record("a", "load", TaskStatus.FAILED, error=ErrorInfo("KeyError", "'day'"), attempts=1),
        record("b", "transform", TaskStatus.FAILED, error=upstream),
        record("c", "side", TaskStatus.CANCELLED, error=ErrorInfo(SKIPPED, "load (a) failed")),
        record("d", "other", TaskStatus.DONE, attempts=1),
        record("e", "fan", TaskStatus.WAITING, attempts=1),  # ran, waits for its join
        record("f", "later", TaskStatus.WAITING),
        record("g", "q", TaskStatus.RETRYING, attempts=1),
        record("h", "other", TaskStatus.RUNNING, attempts=1, copy=True),  # a hedge copy
    ]
    status = flow_status("f1", "nightly", records)
    assert status.state is FlowState.RUNNING
    assert status.counts == Counts(failed=2, cancelled=1, done=1, running=1, waiting=1, queued=1)
    assert status.total == 7
    assert [n.node for n in status.failures] == ["load", "transform"]
    assert status.summary == (
        "1 of 7 done, 2 failed: KeyError: 'day'; UpstreamFailed: load (a) failed: KeyError: "
        "'day', 1 cancelled"
    )
    assert status.node("side").reason == "Skipped: load (a) failed"
    with pytest.raises(KeyError, match="no node 'nope'"):
        status.node("nope")


@pytest.mark.parametrize(
    ("statuses", "state"),
    [
        ([TaskStatus.DONE, TaskStatus.DONE], FlowState.SUCCEEDED),
        ([TaskStatus.DONE, TaskStatus.EXPIRED], FlowState.FAILED),
        ([TaskStatus.CANCELLED, TaskStatus.FAILED], FlowState.FAILED),
        ([TaskStatus.CANCELLED, TaskStatus.DONE], FlowState.CANCELLED),
        ([TaskStatus.QUEUED, TaskStatus.FAILED], FlowState.RUNNING),
    ],
)
def test_the_flow_state_follows_its_tasks(statuses: list[TaskStatus], state: FlowState) -> None:
    records = [record(str(i), f"n{i}", s) for i, s in enumerate(statuses)]
    assert flow_status("f1", "", records).state is state
    assert state.final is (state is not FlowState.RUNNING)


def test_orders_and_flows_share_the_summary_line() -> None:
    counts = Counts(done=37, failed=2, queued=45)
    line = summarize(84, counts, ["ValueError: out of stock", "ValueError: out of stock"])
    assert line == "37 of 84 done, 2 failed: ValueError: out of stock"
    from taskflow.supervisor import Counts as OrderCounts

    assert OrderCounts is Counts
