import io
import json
import struct

import fastavro
import pytest

from lifecycle.schemas import Codec, load_catalog
from lifecycle.schemas.catalog import SCHEMA_DIR
from lifecycle.schemas.errors import (
    DecodeError,
    NotConfluentFramed,
    SchemaNotAllowed,
    TruncatedRecord,
    UnknownSchemaId,
)
from tests.unit.samples import PII, sample

CATALOG = load_catalog()
CODEC = Codec()


@pytest.mark.parametrize("record", CATALOG.records, ids=lambda r: r.short_name)
def test_every_record_round_trips(record):
    value = sample(record)
    data = CODEC.encode(record, value)
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == record.schema_id
    decoded = CODEC.decode(data, topic=record.topic)
    assert decoded.record is record
    assert decoded.value == value


def test_body_is_plain_avro_readable_from_the_avsc_file():
    """What a foreign client does: skip 5 bytes, read with the published .avsc."""
    record = CATALOG.by_event_type("session.started")
    value = sample(record)
    data = CODEC.encode(record, value)
    schema = fastavro.parse_schema(json.loads((SCHEMA_DIR / "avro" / "SessionStarted.avsc").read_text()))
    read = fastavro.schemaless_reader(io.BytesIO(data[5:]), schema)
    assert read["session_id"] == value["session_id"]
    assert str(read["event_id"]) == value["event_id"]  # a logical-type-aware reader gives a UUID


def _valid(event_type="session.started"):
    record = CATALOG.by_event_type(event_type)
    return CODEC.encode(record, sample(record))


@pytest.mark.parametrize(
    "data, error",
    [
        (None, NotConfluentFramed),
        (b"", NotConfluentFramed),
        (b'{"event_type": "session.started"}', NotConfluentFramed),
        (b"\x01" + _valid()[1:], NotConfluentFramed),
        (b"\x00" + struct.pack(">I", 424242) + _valid()[5:], UnknownSchemaId),
        (_valid()[:20], TruncatedRecord),
        (_valid() + b"\x00", TruncatedRecord),
        (_valid()[:5] + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", TruncatedRecord),
    ],
    ids=["null", "empty", "json", "magic", "unknown-id", "truncated", "trailing", "garbage"],
)
def test_bad_bytes_raise_a_decode_error_with_a_reason(data, error):
    with pytest.raises(error) as info:
        CODEC.decode(data, topic="session-events")
    assert info.value.reason


def test_invalid_utf8_is_a_decode_error():
    record = CATALOG.by_event_type("session.ended")
    value = sample(record)
    value["session_id"] = "s" * 10
    data = bytearray(CODEC.encode(record, value))
    pos = data.index(b"s" * 10)
    data[pos] = 0xFF
    with pytest.raises(TruncatedRecord, match="UTF-8"):
        CODEC.decode(bytes(data), topic="session-events")


def test_record_on_the_wrong_topic_is_refused():
    with pytest.raises(SchemaNotAllowed):
        CODEC.decode(_valid("session.started"), topic="account-events")


def test_decode_errors_never_carry_record_values():
    record = CATALOG.by_event_type("account.registered")
    data = CODEC.encode(record, sample(record))
    cuts = [data[:n] for n in range(len(data))] + [data + b"x", data[:5] + data[6:]]
    for cut in cuts:
        try:
            CODEC.decode(cut, topic="account-events")
        except DecodeError as exc:
            text = f"{exc} {exc.reason}"
            for secret in PII.values():
                assert secret not in text
            assert exc.__cause__ is None or not any(s in str(exc.__cause__) for s in PII.values())
