"""What flows cost the plain path on Redis: server CPU per task of the enqueue, claim and
complete scripts of two trees, interleaved batch by batch on one private server.

    git worktree add /tmp/before <commit before>
    redis-server --port 6391 --save "" --appendonly no --daemonize yes --pidfile /tmp/rb.pid
    python benchmarks/redis_flow_cost.py --baseline /tmp/before --port 6391 --pidfile /tmp/rb.pid

Both trees' scripts are loaded into the same server and driven with the same plain batches (100
tasks without flow fields, packed by this tree's codec: the plain arguments are the same for
both). Each script call is measured by the server's own CPU time (the ``schedstat`` of its main
thread, in ns), not by the wall clock, so the other work of a shared machine does not land in
the numbers; the two trees alternate, their order swapping every round. Prints the median CPU
per task of each script and after/before. Flushes database 15 of the server it is given.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "src"))

from taskflow._ids import new_task_id, queue_code  # noqa: E402
from taskflow._message import Outcome, OutcomeKind, TaskMessage  # noqa: E402
from taskflow.redis._codec import (  # noqa: E402
    LEASE_EXPIRED,
    complete_args,
    enqueue_args,
    time_arg,
)

SCRIPTS = ("enqueue", "claim", "complete")
NOW = 1_700_000_000.0


def load(client: redis.Redis, root: Path) -> dict[str, Any]:
    """The three scripts of the tree at `root`, the prelude prepended, registered on `client`."""
    lua = root / "src/taskflow/redis/lua"
    prelude = (lua / "common.lua").read_text()
    return {
        n: client.register_script(f"{prelude}\n{(lua / f'{n}.lua').read_text()}") for n in SCRIPTS
    }


def one_round(scripts: dict[str, Any], prefix: str, batch: int, cpu: Any) -> dict[str, int]:
    """Enqueue, claim and complete `batch` plain tasks; the server CPU ns of each call."""
    keys = [f"{prefix}{{default}}:ev"]
    head = [prefix, "default", time_arg(NOW), "10000", "PUBLISH"]
    code = queue_code("default")
    messages = [
        TaskMessage(id=new_task_id(code), queue="default", name="t", payload=b"x" * 50)
        for _ in range(batch)
    ]
    spent: dict[str, int] = {}

    def call(name: str, args: list[Any]) -> Any:
        start = cpu()
        reply = scripts[name](keys=keys, args=head + args)
        spent[name] = cpu() - start
        return reply

    call("enqueue", enqueue_args(messages, NOW, "", NOW + 3600))
    nonce = os.urandom(8).hex()
    claim = [str(batch), time_arg(NOW + 30), "w1", time_arg(NOW + 3600), LEASE_EXPIRED, nonce, ""]
    flat = call("claim", claim)[1:]
    outcomes = [
        Outcome(flat[i].decode(), int(flat[i + 1]), OutcomeKind.DONE, b"r", None, None, NOW + 3600)
        for i in range(0, len(flat), 4)
    ]
    assert len(outcomes) == batch, "the claim returned fewer tasks than were enqueued"
    call("complete", complete_args(outcomes, 1000))
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="checkout of the 'before'")
    parser.add_argument("--port", type=int, required=True, help="a private redis-server's port")
    parser.add_argument("--pidfile", type=Path, required=True, help="that server's pid file")
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    pid = int(args.pidfile.read_text())

    def cpu() -> int:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            return int(f.read().split()[0])

    client = redis.Redis(port=args.port, db=15)
    client.flushdb()
    trees = {"before": load(client, args.baseline), "after": load(client, HERE)}
    spent: dict[str, dict[str, list[int]]] = {t: {s: [] for s in SCRIPTS} for t in trees}
    for i in range(args.rounds):
        for tree in list(trees) if i % 2 == 0 else list(trees)[::-1]:
            for name, ns in one_round(trees[tree], f"cost:{tree}:", args.batch, cpu).items():
                spent[tree][name].append(ns)
    client.flushdb()
    total = dict.fromkeys(trees, 0.0)
    for name in SCRIPTS:
        per_task = {t: statistics.median(spent[t][name]) / 1e3 / args.batch for t in trees}
        for t in trees:
            total[t] += per_task[t]
        ratio = per_task["after"] / per_task["before"]
        print(
            f"{name:9s} before {per_task['before']:6.2f} us/task  after "
            f"{per_task['after']:6.2f} us/task  after/before {ratio:.3f}"
        )
    print(
        f"{'total':9s} before {total['before']:6.2f} us/task  after {total['after']:6.2f} us/task  "
        f"after/before {total['after'] / total['before']:.3f}"
    )


if __name__ == "__main__":
    main()
