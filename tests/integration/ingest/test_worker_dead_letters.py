"""Bad bytes on input topics never stop the worker; each lands in dead-letters with its reason,
its origin and its bytes intact, while valid events around it are processed."""

import struct
import time
import uuid

from kafka import KafkaConsumer

from lifecycle.connectors.emitter import Emitter
from lifecycle.schemas import Codec
from lifecycle.streams.runtime.decoding import DLQ_HEADER_PREFIX
from lifecycle.supervisor import http_get
from tests.helpers import metric, opened_letter


def _event(n, account="acc-dlq"):
    return {"event_id": str(uuid.uuid4()), "event_type": "session.login_failed", "occurred_at": 1767225600000 + n,
            "account_id": account, "source": "auth", "ip": "198.51.100.9", "failure_reason": "bad_password"}


def _counter(worker, name, **labels):
    return metric(worker.url("/metrics"), name, **labels)


def _wait_for(predicate, deadline_s=30, what="condition"):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_bad_records_go_to_dead_letters_and_the_worker_keeps_going(settings, worker):
    topic = settings.topic("session-events")
    with Emitter(settings) as emitter:
        valid = emitter.codec.encode_event(_event(0) | {"occurred_at": 1767225600000})
        bad = {
            "not_confluent_framed": b'{"event_type":"session.started"}',
            "unknown_schema_id": b"\x00" + struct.pack(">I", 987654) + valid[5:],
            "malformed_avro": valid[: len(valid) - 7],
        }
        emitter.emit(_event(1))
        for value in bad.values():
            emitter.send_raw(topic, b"acc-dlq", value)
        emitter.emit(_event(2))
        emitter.flush()

    _wait_for(lambda: _counter(worker, "lifecycle_events_rejected_total", topic="session-events") >= 3,
              what="three rejections")
    _wait_for(lambda: _counter(worker, "lifecycle_events_ingested_total", event_type="session.login_failed") >= 2,
              what="the valid events around them")

    consumer = KafkaConsumer(settings.topic("dead-letters"), bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=1000, session_timeout_ms=6000)
    letters = []
    end = time.monotonic() + 20
    try:
        while len(letters) < 3 and time.monotonic() < end:
            letters.extend(consumer)
    finally:
        consumer.close()
    assert len(letters) == 3
    codec = Codec(topic_prefix=settings.topic_prefix)
    by_reason = {}
    for msg in letters:
        headers = dict(msg.headers)
        letter = codec.decode(msg.value, topic="dead-letters").value
        assert msg.key == b"acc-dlq"
        assert headers[DLQ_HEADER_PREFIX + "topic"].decode() == topic == letter["original_topic"]
        assert int(headers[DLQ_HEADER_PREFIX + "offset"]) == letter["original_offset"]
        by_reason[headers[DLQ_HEADER_PREFIX + "reason"].decode()] = letter
        assert headers[DLQ_HEADER_PREFIX + "sealed_for"] == b"key"  # sealed under acc-dlq's key
        letter["opened"] = opened_letter(settings, msg, letter)
    assert set(by_reason) == set(bad)
    for reason, value in bad.items():
        assert by_reason[reason]["original_value"] != value  # never in clear on the topic
        assert by_reason[reason]["opened"] == (b"acc-dlq", value)  # bytes intact once opened
    offsets = sorted(letter["original_offset"] for letter in by_reason.values())
    assert offsets == [offsets[0], offsets[0] + 1, offsets[0] + 2]  # all in one partition, in order

    # Still alive and still consuming after the bad records.
    assert worker.alive()
    with Emitter(settings) as emitter:
        emitter.emit(_event(3))
    _wait_for(lambda: _counter(worker, "lifecycle_events_ingested_total", event_type="session.login_failed") >= 3,
              what="an event after the bad ones")


def test_health_ready_and_metrics_are_served(worker):
    assert http_get(worker.url("/healthz"))[0] == 200
    assert http_get(worker.url("/readyz"))[0] == 200
    status, body = http_get(worker.url("/metrics"))
    assert status == 200
    text = body.decode()
    assert 'lifecycle_events_ingested_total{event_type="account.registered",topic="account-events"} 0.0' in text
    assert "lifecycle_worker_ready 1.0" in text
