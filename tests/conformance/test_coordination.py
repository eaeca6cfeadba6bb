"""Conformance of `Coordination` (``broker.coordination``): the small key-value space
(compare-and-set) and named leases with fencing."""

from __future__ import annotations

from taskflow.abc import Broker, LeaseInfo, Versioned
from taskflow.testing import FakeClock

# -- key-value records ----------------------------------------------------------------------


async def test_kv_versions_and_unconditional_writes(backend: Broker) -> None:
    coordination = backend.coordination
    assert await coordination.kv_get("orders", "o1") is None
    assert await coordination.kv_set("orders", "o1", b"v1") == 1
    assert await coordination.kv_set("orders", "o1", b"v2") == 2
    assert await coordination.kv_get("orders", "o1") == Versioned(b"v2", 2)
    assert await coordination.kv_get("plans", "o1") is None  # namespaces are separate


async def test_kv_compare_and_set(backend: Broker) -> None:
    coordination = backend.coordination
    assert await coordination.kv_set("orders", "o1", b"a", expect_version=0) == 1
    assert await coordination.kv_set("orders", "o1", b"b", expect_version=0) is None
    assert await coordination.kv_set("orders", "o1", b"b", expect_version=2) is None
    assert await coordination.kv_set("orders", "o1", b"b", expect_version=1) == 2
    assert await coordination.kv_set("orders", "o1", b"c", expect_version=1) is None
    assert await coordination.kv_get("orders", "o1") == Versioned(b"b", 2)
    assert await coordination.kv_set("orders", "missing", b"x", expect_version=1) is None
    assert await coordination.kv_get("orders", "missing") is None


async def test_kv_list_and_delete(backend: Broker) -> None:
    coordination = backend.coordination
    assert await coordination.kv_list("orders") == {}
    await coordination.kv_set("orders", "o1", b"1")
    await coordination.kv_set("orders", "o2", b"2")
    await coordination.kv_set("orders", "o2", b"22")
    await coordination.kv_set("other", "o3", b"3")
    assert await coordination.kv_list("orders") == {
        "o1": Versioned(b"1", 1),
        "o2": Versioned(b"22", 2),
    }
    assert await coordination.kv_delete("orders", "o1") is True
    assert await coordination.kv_delete("orders", "o1") is False
    assert await coordination.kv_delete("nowhere", "o1") is False
    assert await coordination.kv_list("orders") == {"o2": Versioned(b"22", 2)}
    # A deleted key can be created again with expect_version=0.
    assert await coordination.kv_set("orders", "o1", b"again", expect_version=0) == 1


async def test_kv_values_are_bytes_round_trip(backend: Broker) -> None:
    value = bytes(range(256)) * 4
    await backend.coordination.kv_set("blobs", "b", value)
    stored = await backend.coordination.kv_get("blobs", "b")
    assert stored is not None and stored.value == value


# -- named leases ---------------------------------------------------------------------------


async def test_lease_acquire_and_contention(backend: Broker, clock: FakeClock) -> None:
    coordination = backend.coordination
    token = await coordination.acquire_lease("leader", "a", ttl_s=10, now=clock.time())
    assert token is not None
    assert await coordination.acquire_lease("leader", "b", ttl_s=10, now=clock.time()) is None
    info = await coordination.get_lease("leader", now=clock.time())
    assert info == LeaseInfo(name="leader", owner="a", token=token, expires_at=clock.time() + 10)
    # The owner acquiring again keeps its token and extends the lease.
    await clock.advance(5)
    assert await coordination.acquire_lease("leader", "a", ttl_s=10, now=clock.time()) == token
    info = await coordination.get_lease("leader", now=clock.time())
    assert info is not None and info.expires_at == clock.time() + 10
    assert await coordination.get_lease("other", now=clock.time()) is None


async def test_lease_lapse_and_takeover(backend: Broker, clock: FakeClock) -> None:
    coordination = backend.coordination
    token_a = await coordination.acquire_lease("leader", "a", ttl_s=10, now=clock.time())
    assert token_a is not None
    await clock.advance(10)
    assert await coordination.get_lease("leader", now=clock.time()) is None
    token_b = await coordination.acquire_lease("leader", "b", ttl_s=10, now=clock.time())
    assert token_b is not None and token_b > token_a
    # The old owner's renewal and release are refused: the token is stale.
    ttl = 10
    assert not await coordination.renew_lease("leader", "a", token_a, ttl_s=ttl, now=clock.time())
    assert not await coordination.release_lease("leader", "a", token_a)
    info = await coordination.get_lease("leader", now=clock.time())
    assert info is not None and (info.owner, info.token) == ("b", token_b)


async def test_lease_renew(backend: Broker, clock: FakeClock) -> None:
    coordination = backend.coordination
    token = await coordination.acquire_lease("lock", "a", ttl_s=10, now=clock.time())
    assert token is not None
    for _ in range(3):
        await clock.advance(8)
        assert await coordination.renew_lease("lock", "a", token, ttl_s=10, now=clock.time())
    assert await coordination.acquire_lease("lock", "b", ttl_s=10, now=clock.time()) is None
    assert not await coordination.renew_lease("lock", "b", token, ttl_s=10, now=clock.time())
    assert not await coordination.renew_lease("lock", "a", token + 1, ttl_s=10, now=clock.time())
    assert not await coordination.renew_lease("unheld", "a", token, ttl_s=10, now=clock.time())


async def test_lease_release(backend: Broker, clock: FakeClock) -> None:
    coordination = backend.coordination
    token_a = await coordination.acquire_lease("lock", "a", ttl_s=10, now=clock.time())
    assert token_a is not None
    assert not await coordination.release_lease("lock", "b", token_a)
    assert await coordination.release_lease("lock", "a", token_a)
    assert not await coordination.release_lease("lock", "a", token_a)
    assert await coordination.get_lease("lock", now=clock.time()) is None
    token_b = await coordination.acquire_lease("lock", "b", ttl_s=10, now=clock.time())
    assert token_b is not None and token_b > token_a
    assert not await coordination.renew_lease("lock", "a", token_a, ttl_s=10, now=clock.time())
