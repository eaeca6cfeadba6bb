"""The parts of redis-py that are not public and the Redis backend relies on are all there.

Every such use lives in ``taskflow/redis/_redispy.py``; `missing_internals` checks each one
(attributes, methods) against the installed redis-py, so an upgrade that changes them fails
here with the name of what is gone instead of somewhere deep in a connection.
"""

from __future__ import annotations

import pytest

from taskflow.redis._redispy import missing_internals


def test_the_redis_py_internals_the_backend_uses_exist() -> None:
    missing = missing_internals()
    assert not missing, "\n".join(missing)


def test_a_missing_internal_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from redis.asyncio.retry import Retry

    original = Retry.__init__

    def without_backoff(self: Retry, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        del self._backoff

    monkeypatch.setattr(Retry, "__init__", without_backoff)
    [message] = missing_internals()
    assert "Retry._backoff" in message and "taskflow.redis._redispy" in message
