"""Our codec against a plain Kafka client that knows nothing of our code: kafka-python plus
fastavro, the published .avsc, and the documented id rule (docs/schemas.md)."""

import io
import json
import struct
import time
import uuid

import avro.schema
import fastavro
from kafka import KafkaConsumer, KafkaProducer

from lifecycle.connectors.emitter import Emitter
from lifecycle.schemas import Codec
from lifecycle.schemas.catalog import SCHEMA_DIR, plain_schema


def _foreign_schema_id(schema):
    # The rule as documented for foreign clients (docs/schemas.md), computed with the reference
    # `avro` package, not with the fastavro the pipeline uses: the specification's CRC-64-AVRO of
    # the Parsing Canonical Form as a number, folded to 31 bits. Logical types take no part in the
    # canonical form; the avro package keeps {"type": "long"} for them, so they are left out first.
    v = int.from_bytes(avro.schema.parse(json.dumps(plain_schema(schema))).fingerprint("CRC-64-AVRO"), "little")
    return ((v ^ (v >> 31) ^ (v >> 62)) & 0x7FFFFFFF) or 1


def _read_all(settings, topic, n, deadline_s=20):
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=1000, session_timeout_ms=6000)
    out = []
    end = time.monotonic() + deadline_s
    try:
        while len(out) < n and time.monotonic() < end:
            out.extend(consumer)
    finally:
        consumer.close()
    return out


def test_plain_client_reads_what_we_write(settings):
    event = {"event_id": str(uuid.uuid4()), "event_type": "session.file_transferred",
             "occurred_at": "2026-03-01T10:00:00Z", "account_id": "acc-42", "source": "files",
             "session_id": "s-42", "mime_type": "application/pdf", "size_bytes": 123456}
    with Emitter(settings) as emitter:
        emitter.emit(event)
    [msg] = _read_all(settings, settings.topic("session-events"), 1)
    assert msg.key == b"acc-42"
    magic, sid = struct.unpack(">bI", msg.value[:5])
    schema = json.loads((SCHEMA_DIR / "avro" / "SessionFileTransferred.avsc").read_text())
    assert magic == 0 and sid == _foreign_schema_id(schema)
    value = fastavro.schemaless_reader(io.BytesIO(msg.value[5:]), fastavro.parse_schema(schema))
    assert value["size_bytes"] == 123456 and value["session_id"] == "s-42"


def test_we_read_what_a_plain_client_writes(settings):
    schema = json.loads((SCHEMA_DIR / "avro" / "AnalyticsPageViewed.avsc").read_text())
    value = {"event_id": str(uuid.uuid4()), "event_type": "analytics.page_viewed", "occurred_at": 1767225600000,
             "account_id": None, "visitor_id": "vis-7", "source": "web", "path": "/pricing",
             "referrer_domain": None, "browser": "firefox", "os": "linux", "mime_type": "text/html", "country": "FR"}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), value)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        producer.send(settings.topic("analytics-events"), key=b"vis-7",
                      value=struct.pack(">bI", 0, _foreign_schema_id(schema)) + body.getvalue()).get(10)
    finally:
        producer.close()
    [msg] = _read_all(settings, settings.topic("analytics-events"), 1)
    decoded = Codec().decode(msg.value, topic="analytics-events")
    assert decoded.record.event_type == "analytics.page_viewed"
    assert decoded.value == value
