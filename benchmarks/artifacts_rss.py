"""How much memory putting and fetching a large artifact costs, per `ArtifactStore`.

For each store, a fresh Python process opens the store (warming it up with a small artifact),
then puts an artifact of ``--mb`` megabytes streamed from a generator (64 KiB pieces) and
fetches it back, counting the bytes. Before each of the two steps it resets the process's peak
RSS (``/proc/self/clear_refs``) and reads its RSS; after it, it reads the peak (``VmHWM``): the
difference is what the step added to the process's peak memory. It also times each step (MB/s;
the generator and the reader do no work of their own). The issue's target: under 50 MB for a
200 MB artifact on each store.

    .venv/bin/python -m benchmarks.artifacts_rss --mb 200 \
        --redis-url redis://127.0.0.1:6392/0 --postgres-url "$TASKFLOW_TEST_POSTGRES_DSN"

Stores: ``directory`` (a temporary directory under ``--dir``), ``redis`` and ``postgres`` (the
backend's own store, `Broker.default_artifact_store`, from ``--redis-url`` / ``--postgres-url``,
default ``$TASKFLOW_TEST_REDIS_URL`` / ``$TASKFLOW_TEST_POSTGRES_DSN``). Nothing is flushed: the
Redis keys live under a random prefix and the PostgreSQL tables in a random schema, both
removed afterwards; still, give a 200 MB run a Redis server of its own (it holds the artifact
while it runs). Prints a table; ``--json`` prints one JSON object per store instead. Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

STORES = ("directory", "redis", "postgres")
MiB = 1 << 20
_PIECE = 64 << 10


# -- the child: one store, one put, one fetch ------------------------------------------------------


def status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> int:
    """Reset the peak RSS to the current RSS (Linux >= 4.0); return that RSS in KiB."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")
    return status_kib("VmRSS")


async def _pieces(total: int) -> AsyncIterator[bytes]:
    block = os.urandom(MiB)
    sent = 0
    while sent < total:
        start = sent % MiB
        piece = block[start : start + min(_PIECE, total - sent)]
        sent += len(piece)
        yield piece


async def _open_store(stack: AsyncExitStack, kind: str, where: str) -> Any:
    if kind == "directory":
        from taskflow import DirectoryArtifactStore

        return await stack.enter_async_context(DirectoryArtifactStore(where))
    from taskflow._backends import broker_from_url

    broker = await stack.enter_async_context(broker_from_url(where))
    stack.push_async_callback(_forget_namespace, broker)
    return await stack.enter_async_context(broker.default_artifact_store())


async def _forget_namespace(broker: Any) -> None:
    """Remove what the run left on the server: the Redis keys under its prefix, or its schema."""
    storage = broker.storage
    if getattr(storage, "prefix", None):
        keys = [k async for k in storage.client.scan_iter(match=f"{storage.prefix}*")]
        for key in keys:
            await storage.client.delete(key)
    elif getattr(storage, "schema", None):
        await storage.run(lambda conn: conn.execute(f'DROP SCHEMA "{storage.schema}" CASCADE'))


async def measure(kind: str, where: str, size: int) -> dict[str, Any]:
    """Put then fetch `size` bytes on one store; the peak RSS increase and rate of each."""
    async with AsyncExitStack() as stack:
        store = await _open_store(stack, kind, where)
        await store.write("warm", "up", _pieces(3 * MiB), now=time.time())
        async for _ in store.read("warm", "up"):
            pass

        base = reset_peak()
        started = time.perf_counter()
        blob = await store.write("bench", "export.bin", _pieces(size), now=time.time())
        put_s = time.perf_counter() - started
        put_peak = status_kib("VmHWM") - base

        base = reset_peak()
        started, fetched = time.perf_counter(), 0
        async for piece in store.read("bench", "export.bin"):
            fetched += len(piece)
        fetch_s = time.perf_counter() - started
        fetch_peak = status_kib("VmHWM") - base
        await store.delete("bench", "export.bin")
    if blob.size != size or fetched != size:
        raise RuntimeError(f"{kind}: put {blob.size} and fetched {fetched} of {size} bytes")
    return {
        "store": kind,
        "mb": size / 1e6,
        "put_peak_rss_increase_mb": put_peak * 1024 / 1e6,
        "fetch_peak_rss_increase_mb": fetch_peak * 1024 / 1e6,
        "put_mb_per_s": size / 1e6 / put_s,
        "fetch_mb_per_s": size / 1e6 / fetch_s,
    }


# -- the parent: one fresh process per store ------------------------------------------------------


def _where(kind: str, args: argparse.Namespace, workdir: str) -> str:
    rand = os.urandom(4).hex()
    if kind == "directory":
        return os.path.join(workdir, "artifacts")
    if kind == "redis":
        url = args.redis_url or os.environ.get("TASKFLOW_TEST_REDIS_URL")
        if not url:
            sys.exit("the redis store needs --redis-url (or $TASKFLOW_TEST_REDIS_URL)")
        return f"{url}{'&' if '?' in url else '?'}prefix=bench-artifacts-{rand}"
    url = args.postgres_url or os.environ.get("TASKFLOW_TEST_POSTGRES_DSN")
    if not url:
        sys.exit("the postgres store needs --postgres-url (or $TASKFLOW_TEST_POSTGRES_DSN)")
    return f"{url}{'&' if '?' in url else '?'}schema=bench_artifacts_{rand}"


def run_child(kind: str, where: str, size: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.artifacts_rss", "--child", kind, where, str(size)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"the {kind} run failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| store | MB | put: peak RSS +MB | fetch: peak RSS +MB | put MB/s | fetch MB/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['store']} | {r['mb']:.0f} | {r['put_peak_rss_increase_mb']:.1f} | "
            f"{r['fetch_peak_rss_increase_mb']:.1f} | {r['put_mb_per_s']:.0f} | "
            f"{r['fetch_mb_per_s']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated")
    parser.add_argument("--mb", type=float, default=200.0, help="artifact size, in MB (10^6)")
    parser.add_argument("--redis-url")
    parser.add_argument("--postgres-url")
    parser.add_argument("--dir", default=None, help="where the directory store's root goes")
    parser.add_argument("--json", action="store_true", help="one JSON object per store")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, where, size = args.child
        print(json.dumps(asyncio.run(measure(kind, where, int(size)))))
        return 0
    size = int(args.mb * 1e6)
    workdir = tempfile.mkdtemp(prefix="taskflow-artifacts-", dir=args.dir)
    try:
        results = [
            run_child(kind, _where(kind, args, workdir), size) for kind in args.stores.split(",")
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        for result in results:
            print(json.dumps(result))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
