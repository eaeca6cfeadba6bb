"""An elected generator (seed 003): N instances, one generator, the others process; kill it.

The seed's task: every instance of an app starts as a *processor* and keeps trying to become
the one *generator*; the generator sends a message every 500 ms, the processors process them;
when the generator dies, another instance becomes the generator. Here:

* the role is ``app.leadership("generator")``: a processor tries to take it now and then
  (``app.try_leadership``, every 100 ms), the generator holds it while it generates, renewed in
  the background, and a dead generator's role lapses after its ttl (1 s);
* a message is a task (``process``) sent by the generator and run by the processors' workers;
  one message in five fails (an error, counted);
* the message counter is a fenced record (``term.fenced_set``): a generator that lost its role
  could not write it any more;
* after 2 s the generator is killed: its scope is cancelled at once, leaving its role to
  lapse as a crash would. Another instance takes over about a ttl later.

Running totals (generated, processed, errors) and each switch print as they happen.

Run it with `python examples/leader.py`: three instances, each an app with its own worker, in
one process on one embedded (memory) backend, for about 5 s. Given a Redis or PostgreSQL URL
(`python examples/leader.py redis://localhost:6379/0`), it runs the instances as separate
processes on that server and the kill is a real SIGKILL.
"""

# expect: instance 1: switched to generator (token 1)
# expect: killing the generator, instance 1
# expect: switched to generator (token 2)
# expect: every generated message was processed or failed: True

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from taskflow import QueueTasks
from taskflow.abc import Broker
from taskflow.memory import MemoryBroker

INSTANCES = 3
TTL_S = 1.0  # the generator's role: a dead generator's lapses after this long
EVERY_S = 0.5  # one message every 500 ms
TRY_EVERY_S = 0.1  # how often a processor tries to become the generator
KILL_AFTER_S = 2.0
RUN_S = 5.0

Report = Callable[..., None]


@dataclass
class Totals:
    """The running totals, and who generates."""

    generated: int = 0
    processed: int = 0
    errors: int = 0
    generator: int | None = None
    killed_at: float = 0.0

    def on(self, instance: int, event: str, **data: object) -> None:
        """One instance's event: update the totals and print it."""
        if event == "switched":
            self.generator = instance
            since = f", {time.monotonic() - self.killed_at:.2f} s after the kill"
            print(
                f"instance {instance}: switched to generator (token {data['token']})"
                f"{since if self.killed_at else ''}"
            )
            return
        if event == "generated":
            self.generated += 1
        elif event == "processed":
            self.processed += 1
        elif event == "error":
            self.errors += 1
        print(
            f"instance {instance}: {event} message {data['message']}   totals: generated "
            f"{self.generated}, processed {self.processed}, errors {self.errors}"
        )

    @property
    def settled(self) -> bool:
        return self.processed + self.errors == self.generated


async def instance(n: int, broker: Broker | str, report: Report, *, crash: bool = False) -> None:
    """One instance: a processor that keeps trying to become the generator. With `crash`, a
    cancellation ends it as a crash would: its role is left to lapse, not given up."""
    app = QueueTasks("leader-demo", broker=broker)

    @app.task(name="process", retries=0)
    async def process(message: int) -> None:
        if message % 5 == 4:
            report(n, "error", message=message)
            raise ValueError(f"message {message} cannot be processed")
        report(n, "processed", message=message)

    async with app:
        while True:
            async with app.running(concurrency=1):  # a processor
                while (term := await app.try_leadership("generator", ttl=TTL_S)) is None:
                    await asyncio.sleep(TRY_EVERY_S)
            term.release_on_exit = not crash
            async with term:  # the generator (the worker stopped: it only generates)
                report(n, "switched", token=term.token)
                last = await app.fenced_get("leader-demo", "messages")
                count = 0 if last is None else int(last.value)
                while True:
                    count += 1
                    if not await term.fenced_set("leader-demo", "messages", b"%d" % count):
                        return  # a newer generator wrote the counter: this one lost
                    await process.add_task(count)
                    report(n, "generated", message=count)
                    await asyncio.sleep(EVERY_S)


async def settle(totals: Totals) -> None:
    deadline = time.monotonic() + 3 * TTL_S
    while not totals.settled and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print(
        f"final totals: generated {totals.generated}, processed {totals.processed}, "
        f"errors {totals.errors}"
    )
    print(f"every generated message was processed or failed: {totals.settled}")


async def in_one_process() -> None:
    """INSTANCES apps in this process, on one memory broker; the kill is a cancellation."""
    totals = Totals()
    async with MemoryBroker() as broker:
        tasks = {}
        for n in range(1, INSTANCES + 1):
            tasks[n] = asyncio.create_task(instance(n, broker, totals.on, crash=True))
            await asyncio.sleep(0.05)  # instance 1 starts first, and is the first generator
        await asyncio.sleep(KILL_AFTER_S)
        victim = totals.generator
        assert victim is not None
        print(f"killing the generator, instance {victim}")
        totals.killed_at = time.monotonic()
        tasks.pop(victim).cancel()  # its role is not given up: it lapses after TTL_S
        await asyncio.sleep(RUN_S - KILL_AFTER_S)
        await settle(totals)
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def in_processes(url: str) -> None:
    """INSTANCES processes on the server of `url`; the kill is a SIGKILL."""
    totals = Totals()
    procs = {}
    for n in range(1, INSTANCES + 1):
        command = [sys.executable, __file__, url, "--instance", str(n)]
        procs[n] = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE)
        await asyncio.sleep(0.5 if n == 1 else 0.05)  # instance 1 first: the first generator

    async def relay(n: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            event = json.loads(line)
            totals.on(n, event.pop("event"), **event)

    relays = [asyncio.create_task(relay(n, p)) for n, p in procs.items()]
    try:
        await asyncio.sleep(KILL_AFTER_S)
        victim = totals.generator
        assert victim is not None
        print(f"killing the generator, instance {victim}")
        totals.killed_at = time.monotonic()
        procs[victim].send_signal(signal.SIGKILL)
        await asyncio.sleep(RUN_S - KILL_AFTER_S)
        await settle(totals)
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        await asyncio.gather(*relays, return_exceptions=True)


def report_json(instance: int, event: str, **data: object) -> None:
    """In an instance process: an event, as one JSON line to the parent."""
    print(json.dumps({"event": event, **data}), flush=True)


def main() -> None:
    args = sys.argv[1:]
    if "--instance" in args:  # a child of in_processes
        asyncio.run(instance(int(args[2]), args[0], report_json))
    elif args:
        asyncio.run(in_processes(args[0]))
    else:
        asyncio.run(in_one_process())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
