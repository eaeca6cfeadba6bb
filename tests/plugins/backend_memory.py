"""Backend plugin for the conformance suite: the in-memory backend (kind ``memory``).

Follows the protocol described in ``tests/conformance/conftest.py``: `BACKEND_KINDS` names the
kinds this module provides, and ``backend_factory_memory`` returns a zero-argument callable
giving an async context manager that yields a fresh, open, empty `MemoryBroker`;
``backend_url_memory`` is ``memory://`` (every app built from it has a store of its own).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager as AsyncContextManager

import pytest

from taskflow.abc import Broker
from taskflow.memory import MemoryBroker

BACKEND_KINDS: tuple[str, ...] = ("memory",)


@contextlib.asynccontextmanager
async def _open_memory_backend() -> AsyncIterator[Broker]:
    async with MemoryBroker() as broker:
        yield broker


@pytest.fixture
def backend_factory_memory() -> Callable[[], AsyncContextManager[Broker]]:
    """A factory of fresh, open memory backends (each call: a new, empty one)."""
    return _open_memory_backend


@pytest.fixture
def backend_url_memory() -> str:
    """The URL apps of a test build their memory backends from."""
    return "memory://"
