"""The systems the benchmark runner knows: who they are, how to run them, what they need.

One `System` per system under test. ``python -m benchmarks --systems a,b`` picks by `System.name`;
``--backend`` picks by `System.backend` (each backend's floor included). A system with
`System.requirements` runs in its own virtual environment, ``benchmarks/.venvs/<name>``, which the
runner creates on first use and re-creates when the pins change; a system without them
(taskflow's own adapters and the floor) runs in the interpreter that runs the runner, the
project's venv, where taskflow is installed editable.

To add a peer (say arq on Redis): write ``benchmarks/adapters/arq_redis.py`` on `_harness`, then add
``System("arq-redis", "redis", "arq_redis.py", requirements=("arq==0.26.3", UVLOOP))`` below.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Final, Literal

Backend = Literal["memory", "redis", "postgres"]
Role = Literal["ours", "peer", "floor"]

BACKENDS: Final[tuple[Backend, ...]] = ("memory", "redis", "postgres")
ADAPTERS_DIR: Final = Path(__file__).parent / "adapters"
UVLOOP: Final = "uvloop==0.23.0"


@dataclasses.dataclass(frozen=True)
class System:
    """One system under test.

    Attributes:
        name: Unique name, used on the command line, in the table and for its venv.
        backend: The server it runs on (``memory`` needs none). Each backend has one floor,
            the bare loop doing the same work on the same server; ours are compared with it.
        adapter: The adapter script's file name in ``benchmarks/adapters/``.
        role: ``ours`` (taskflow), ``peer`` (compared against), or ``floor`` (the bare loop).
        requirements: pip requirement lines for its own venv; empty: run in the current
            interpreter.
    """

    name: str
    backend: Backend
    adapter: str
    role: Role = "peer"
    requirements: tuple[str, ...] = ()

    @property
    def adapter_path(self) -> Path:
        """Absolute path of the adapter script."""
        return ADAPTERS_DIR / self.adapter

    @property
    def is_floor(self) -> bool:
        """True for the bare-asyncio floor."""
        return self.role == "floor"

    @property
    def own_venv(self) -> bool:
        """True when it runs in ``benchmarks/.venvs/<name>`` rather than the current interpreter."""
        return bool(self.requirements)


SYSTEMS: Final[tuple[System, ...]] = (
    System("taskflow-memory", "memory", "taskflow_memory.py", role="ours"),
    System("taskiq-memory", "memory", "taskiq_memory.py", requirements=("taskiq==0.13.0", UVLOOP)),
    System("floor-asyncio", "memory", "floor_asyncio.py", role="floor"),
    # Redis: every peer's current PyPI release, each in a venv of its own (their redis-py pins
    # conflict: arq 0.28 wants redis < 6, taskiq-redis 1.2 wants redis >= 8).
    System("taskflow-redis", "redis", "taskflow_redis.py", role="ours"),
    System(
        "arq-redis", "redis", "arq_redis.py", requirements=("arq==0.28.0", "hiredis==3.5.0", UVLOOP)
    ),
    # saq 0.26.4 imports typing_extensions without declaring it.
    System(
        "saq-redis",
        "redis",
        "saq_redis.py",
        requirements=("saq[redis,hiredis]==0.26.4", "typing-extensions==4.16.0", UVLOOP),
    ),
    System(
        "taskiq-redis",
        "redis",
        "taskiq_streams.py",  # not taskiq_redis.py: that would shadow the taskiq_redis package
        requirements=("taskiq==0.13.0", "taskiq-redis==1.2.4", UVLOOP),
    ),
    System("streaq-redis", "redis", "streaq_redis.py", requirements=("streaq==7.2.0", UVLOOP)),
    System("qtasks-redis", "redis", "qtasks_redis.py", requirements=("qtasks==1.7.3", UVLOOP)),
    System("floor-redis", "redis", "floor_redis.py", role="floor"),
    # PostgreSQL.
    System("taskflow-postgres", "postgres", "taskflow_postgres.py", role="ours"),
    System("taskflow-postgres-1m", "postgres", "taskflow_postgres_1m.py", role="ours"),
    System(
        "procrastinate-postgres",
        "postgres",
        "procrastinate_postgres.py",
        requirements=("procrastinate==3.10.0", UVLOOP),
    ),
    System(
        "saq-postgres",
        "postgres",
        "saq_postgres.py",
        requirements=("saq[postgres]==0.26.4", "typing-extensions==4.16.0", UVLOOP),
    ),
    System("floor-postgres", "postgres", "floor_postgres.py", role="floor"),
)


def by_name(name: str) -> System:
    """The registered system called `name`.

    Raises:
        KeyError: no such system; the message lists the known names.
    """
    for system in SYSTEMS:
        if system.name == name:
            return system
    known = ", ".join(s.name for s in SYSTEMS)
    raise KeyError(f"no benchmark system named {name!r}; known systems: {known}")


def select(backend: str, names: list[str] | None = None) -> list[System]:
    """Systems to run: those named (in registry order), else those of `backend` (``all``: every
    one), the backend's floor included.

    Raises:
        KeyError: a name in `names` is not registered.
    """
    if names:
        wanted = {by_name(name).name for name in names}
        return [s for s in SYSTEMS if s.name in wanted]
    return [s for s in SYSTEMS if backend == "all" or s.backend == backend]
