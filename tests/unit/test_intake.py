import struct

from lifecycle.schemas import Codec, load_catalog
from lifecycle.streams.runtime.decoding import DLQ_HEADER_PREFIX, Origin, Rejected, dead_letter, triage
from tests.unit.samples import PII, sample

CODEC = Codec()
CATALOG = load_catalog()


def test_valid_event_passes():
    record = CATALOG.by_event_type("account.registered")
    data = CODEC.encode(record, sample(record))
    outcome = triage(CODEC, "account-events", data)
    assert not isinstance(outcome, Rejected)
    assert outcome.value["email"] == PII["email"]


def test_wrong_event_type_inside_a_valid_record_is_rejected():
    record = CATALOG.by_event_type("account.registered")
    value = sample(record)
    value["event_type"] = "account.closed"
    outcome = triage(CODEC, "account-events", CODEC.encode(record, value))
    assert isinstance(outcome, Rejected) and outcome.reason == "invalid_event"


def test_dead_letter_keeps_origin_and_bytes_and_no_personal_data():
    record = CATALOG.by_event_type("account.registered")
    data = CODEC.encode(record, sample(record))
    broken = b"\x00" + struct.pack(">I", 31337) + data[5:]
    outcome = triage(CODEC, "account-events", broken)
    assert isinstance(outcome, Rejected) and outcome.reason == "unknown_schema_id"
    origin = Origin("lifecycle.account-events", 3, 42, 1_767_225_600_000, b"acc-1")
    key, value, headers = dead_letter(CODEC, outcome, origin, broken, now_ms=1)
    assert key == b"acc-1"
    letter = CODEC.decode(value, topic="dead-letters").value
    assert letter["original_value"] == broken
    assert (letter["original_topic"], letter["original_partition"], letter["original_offset"]) == (
        "lifecycle.account-events", 3, 42)
    assert letter["reason"].startswith("unknown_schema_id")
    names = dict(headers)
    assert names[DLQ_HEADER_PREFIX + "reason"] == b"unknown_schema_id"
    assert names[DLQ_HEADER_PREFIX + "offset"] == b"42"
    text = b" ".join(v for _, v in headers).decode() + letter["reason"]
    for secret in PII.values():
        assert secret not in text
