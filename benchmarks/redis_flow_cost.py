"""Server cost of the plain path, before vs after, interleaved per round: the scripts of both
trees loaded in one private server, driven with the same batches (100 tasks) from one client."""
import statistics, sys, time, os
import redis
from pathlib import Path
sys.path.insert(0, "/work/wt/redis/src")
from taskflow._message import TaskMessage, Outcome, OutcomeKind
from taskflow._ids import new_task_id, queue_code
from taskflow.redis._codec import enqueue_args, complete_args, pack, unpack, time_arg, LEASE_EXPIRED

r = redis.Redis(port=int(sys.argv[1]), db=15)
PID = int(open("/tmp/redis17bench.pid").read())
def cpu_ns():
    with open(f"/proc/{PID}/task/{PID}/schedstat") as f:
        return int(f.read().split()[0])
r.flushdb()
def scripts(root):
    lua = Path(root) / "src/taskflow/redis/lua"
    pre = (lua / "common.lua").read_text()
    return {n: r.register_script(pre + "\n" + (lua / f"{n}.lua").read_text()) for n in ("enqueue", "claim", "complete")}
trees = {"before": scripts("/tmp/redis17-before"), "after": scripts("/work/wt/redis")}
ROUNDS, BATCH = int(sys.argv[2]), 100
times = {t: {"enqueue": [], "claim": [], "complete": []} for t in trees}
now = 1_700_000_000.0
code = queue_code("default")
for rnd in range(ROUNDS):
    order = list(trees) if rnd % 2 == 0 else list(trees)[::-1]
    for tree in order:
        sc = trees[tree]
        P = f"bench:{tree}:"
        q = [P, "default", time_arg(now), "10000", "PUBLISH"]
        msgs = [TaskMessage(id=new_task_id(code), queue="default", name="t", payload=b"x" * 50) for _ in range(BATCH)]
        args = enqueue_args(msgs, now, "", now + 3600)
        assert len(args) == 1  # a plain batch: the same arguments for both trees
        t0 = cpu_ns(); sc["enqueue"](keys=[P + "{default}:ev"], args=q + args); times[tree]["enqueue"].append(cpu_ns() - t0)
        t0 = cpu_ns()
        rep = sc["claim"](keys=[P + "{default}:ev"], args=q + [str(BATCH), time_arg(now + 30), "w1", time_arg(now + 3600), LEASE_EXPIRED, os.urandom(8).hex(), ""])
        times[tree]["claim"].append(cpu_ns() - t0)
        flat = rep[1:]
        outs = [Outcome(flat[i].decode(), int(flat[i + 1]), OutcomeKind.DONE, result=b"r", result_expires_at=now + 3600) for i in range(0, len(flat), 4)]
        assert len(outs) == BATCH, len(outs)
        t0 = cpu_ns(); res = sc["complete"](keys=[P + "{default}:ev"], args=q + complete_args(outs, 1000)); times[tree]["complete"].append(cpu_ns() - t0)
        assert all(x == 1 for x in res[:BATCH])
for s in ("enqueue", "claim", "complete"):
    b = statistics.median(times["before"][s]) / 1e3 / BATCH
    a = statistics.median(times["after"][s]) / 1e3 / BATCH
    print(f"{s:9s} before {b:6.2f} us/task  after {a:6.2f} us/task  after/before {a / b:.3f}")
tot_b = sum(statistics.median(times["before"][s]) for s in times["before"]) / 1e3 / BATCH
tot_a = sum(statistics.median(times["after"][s]) for s in times["after"]) / 1e3 / BATCH
print(f"total     before {tot_b:6.2f} us/task  after {tot_a:6.2f} us/task  after/before {tot_a / tot_b:.3f}")
r.flushdb()
