"""Fixtures of the backend conformance suite, and the protocol a backend plugs in with.

The suite in this directory is written once against the `taskflow.abc` contracts and runs on
every backend kind. A backend joins it with a plugin module ``tests/plugins/backend_<name>.py``
(``tests/conftest.py`` loads every such module as a pytest plugin) that defines:

* ``BACKEND_KINDS: tuple[str, ...]``: the kinds it provides, e.g. ``("redis", "redis_cluster")``;
  they become the test ids (``test_x[redis]``);
* for each kind ``k``, a function-scoped pytest fixture named ``backend_factory_<k>`` that returns
  a **zero-argument callable**; each call returns an **async context manager** yielding an
  **open** `Broker` (its `Storage` is ``broker.storage``) that is fresh and isolated: empty of
  tasks, events, key-value records and leases. Closing the context closes the broker. The
  factory may be called several times in one test (the state machine does, once per example,
  each time inside a new event loop), so it must not bind connections when the fixture is set
  up. A fixture that cannot reach its server should ``pytest.skip`` (or fail, per
  ``tests/services.py``).
* for each kind ``k``, a fixture ``backend_url_<k>`` giving a URL of that kind's server under a
  namespace of the test's own (a random ``?prefix=`` / ``?schema=``), cleaned up afterwards, for
  tests that build apps from a URL as users do.

Example (memory, see ``tests/plugins/backend_memory.py``)::

    BACKEND_KINDS = ("memory",)

    @pytest.fixture
    def backend_factory_memory():
        @contextlib.asynccontextmanager
        async def open_backend():
            async with MemoryBroker() as broker:
                yield broker
        return open_backend

Fixtures provided here: ``backend_kind`` (parametrized over every kind), ``backend_factory``
(that kind's factory), ``backend`` (an open broker from it), ``backend_url`` (that kind's URL)
and ``clock`` (a `FakeClock`: tests pass ``now=clock.time()`` and move time with
``await clock.advance(s)``, never sleep).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from pathlib import Path

import pytest

from taskflow.abc import Broker
from taskflow.testing import FakeClock

PLUGINS_DIR = Path(__file__).parent.parent / "plugins"


def _discover_backend_kinds() -> list[str]:
    """Every kind named by a ``tests/plugins/backend_*.py`` module's `BACKEND_KINDS`."""
    kinds: list[str] = []
    for path in sorted(PLUGINS_DIR.glob("backend_*.py")):
        module = importlib.import_module(f"tests.plugins.{path.stem}")
        kinds.extend(getattr(module, "BACKEND_KINDS", ()))
    return kinds


BACKEND_KINDS: list[str] = _discover_backend_kinds()

BackendFactory = Callable[[], AsyncContextManager[Broker]]


@pytest.fixture(params=BACKEND_KINDS, ids=BACKEND_KINDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    """The backend kind under test (one run of each test per kind)."""
    kind: str = request.param
    return kind


@pytest.fixture
def backend_factory(request: pytest.FixtureRequest, backend_kind: str) -> BackendFactory:
    """The kind's factory of fresh, open brokers (see the module docstring)."""
    factory: BackendFactory = request.getfixturevalue(f"backend_factory_{backend_kind}")
    return factory


@pytest.fixture
def backend_url(request: pytest.FixtureRequest, backend_kind: str) -> str:
    """A URL of the kind's server, in a namespace of the test's own (see the module docstring)."""
    url: str = request.getfixturevalue(f"backend_url_{backend_kind}")
    return url


@pytest.fixture
async def backend(backend_factory: BackendFactory) -> AsyncIterator[Broker]:
    """An open, empty broker of the kind under test; its storage is ``backend.storage``."""
    async with backend_factory() as broker:
        yield broker


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock: pass ``now=clock.time()``, move it with ``await clock.advance(s)``."""
    return FakeClock()
