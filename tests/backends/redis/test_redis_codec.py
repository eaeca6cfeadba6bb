"""The Redis backend's one framing (msgpack, bytes as "str") and the named readings of replies."""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]
import msgspec
import pytest

from taskflow.abc import (
    Delivery,
    EnqueueResult,
    ErrorInfo,
    TaskMessage,
    encode_message,
)
from taskflow.redis._codec import (
    RECORD_FIELDS,
    NextDue,
    QueueFacts,
    deliveries_from,
    enqueue_args,
    enqueued_from,
    handed_off,
    outcomes_pushed,
    pack,
    record_from,
    split_outbox,
    unpack,
)


def test_bytes_are_packed_as_msgpack_str_and_come_back_as_bytes() -> None:
    """Redis's Lua msgpack has no "bin" type: any bytes travel with a "str" header."""
    packed = pack([b"\xff\x00", "id", b""])
    assert packed[1] == 0xA2  # fixstr of 2 bytes, not bin 8 (0xc4)
    assert unpack(packed) == [b"\xff\x00", b"id", b""]


def test_a_push_reads_as_outcomes_with_none_where_there_is_none() -> None:
    data = msgpack.packb(
        [[b"t1", b"done", b"\x01", b"", b"12.5"], [b"t2", b"failed", b"", b"e", b""]]
    )
    assert outcomes_pushed(data) == [
        ("t1", [b"done", b"\x01", None, b"12.5"]),
        ("t2", [b"failed", None, b"e", None]),
    ]


def test_an_outcome_too_large_to_push_reads_as_none() -> None:
    """{id, status} only: the task ended, its waiters read the outcome."""
    data = msgpack.packb([[b"t1", b"done"], [b"t2", b"done", b"\x01", b"", b""]])
    assert outcomes_pushed(data) == [("t1", None), ("t2", [b"done", b"\x01", None, None])]


def _fields(**values: bytes) -> list[bytes | None]:
    """`RECORD_FIELDS` values, None but for `values`."""
    return [values.get(name) for name in RECORD_FIELDS]


def test_a_record_whose_message_does_not_decode_shows_what_does() -> None:
    error = msgspec.msgpack.encode(ErrorInfo("UndecodableMessage", "bad"))
    fields = _fields(
        msg=b"\xc1", st=b"failed", att=b"2", err=error, n=b"send", pr=b"3", rt=b"4", nr=b"1"
    )
    record = record_from("t1", "q", fields, [], now=0.0)
    assert record.undecodable
    assert (record.id, record.queue, record.name, record.status) == ("t1", "q", "send", "failed")
    assert (record.attempts, record.priority, record.retries) == (2, 3, 4)
    assert record.error == ErrorInfo("UndecodableMessage", "bad")
    assert record.store_result is False


def test_a_record_shows_each_field_that_decodes_and_defaults_the_others() -> None:
    message = encode_message(TaskMessage(id="t1", name="send", queue="q", payload=b""))
    fields = _fields(msg=message, st=b"running", att=b"x", prog=b"\xc1", wid=b"w")
    record = record_from("t1", "q", fields, [], now=0.0)
    assert record.undecodable
    assert (record.status, record.attempts, record.progress, record.worker_id) == (
        "running",
        0,
        None,
        "w",
    )


def test_a_hand_off_reads_as_first_deliveries_under_its_lease() -> None:
    data = msgpack.packb([b"100.5", b"a", b"m1", b"b", b"m2"])
    assert handed_off(data) == [
        Delivery("a", 1, 1, b"m1", 100.5),
        Delivery("b", 1, 1, b"m2", 100.5),
    ]


def test_replies_of_fixed_size_entries_read_by_name() -> None:
    assert deliveries_from([b"a", 3, 2, b"m"], 9.0) == [Delivery("a", 3, 2, b"m", 9.0)]
    assert enqueued_from([b"a", 1, b"b", 0]) == [
        EnqueueResult("a", True),
        EnqueueResult("b", False),
    ]
    facts = QueueFacts.from_reply([1, 2, 3, 4, b"", b"7.5", 5, 6, 8])
    assert (facts.first_scheduled, facts.first_expiry, facts.finished_last_minute) == (None, 7.5, 6)
    assert facts.waiting == 8
    assert NextDue.from_reply([0, b"3.25", b""]) == NextDue(False, 3.25, None)


def test_a_reply_cut_short_is_an_error_not_a_shorter_list() -> None:
    with pytest.raises(ValueError):
        deliveries_from([b"a", 3, 2], 9.0)


def test_a_plain_batch_sends_no_flow_argument_and_a_mixed_one_aligns_the_wiring() -> None:
    plain = TaskMessage(id="p1", queue="q", name="t", payload=b"")
    child = TaskMessage(id="c1", queue="q", name="t", payload=b"", waits_for=["p1", "p1"])
    assert len(enqueue_args([plain, plain], 1.0, "", 9.0)) == 1
    batch, expires, wiring = enqueue_args([plain, child, plain], 1.0, "", 9.0)
    assert len(unpack(batch)) == 3 * 8
    assert expires == "9.0"
    first, second, third = unpack(wiring)
    assert (first, third) == (b"", b"")
    assert unpack(second)[6] == b"1"  # distinct parents


def test_the_outbox_marker_is_the_replys_last_list() -> None:
    assert split_outbox([1, 0, [2]]) == ([1, 0], True)
    assert split_outbox([b"a", b"b"]) == ([b"a", b"b"], False)
    assert split_outbox([]) == ([], False)
