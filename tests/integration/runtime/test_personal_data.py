"""Seeded personal data must not reach logs, metric labels or dead-letter headers."""

from __future__ import annotations

import struct

from kafka import KafkaConsumer

from lifecycle.connectors.emitter import Emitter
from lifecycle.supervisor import http_get
from tests.helpers import T0, event, metric, post, wait_for
from tests.unit.samples import PII


def test_seeded_personal_data_reaches_no_log_metric_or_header(settings, worker):
    registered = event("account.registered", T0, account="acc-pii", email=PII["email"],
                       first_name=PII["first_name"], last_name=PII["last_name"], phone=PII["phone"])
    with Emitter(settings) as emitter:
        emitter.emit(registered)
        emitter.emit(event("session.started", T0, account="acc-pii", session_id="pii", ip=PII["ip"],
                           login_method="password"))
        emitter.emit(event("session.login_failed", T0, account="acc-pii", ip=PII["ip"],
                           failure_reason=PII["email"]))
        # Broken records that carry personal data: JSON, a cut Avro body, a wrong event type.
        valid = emitter.codec.encode_event(registered)
        emitter.send_raw(settings.topic("account-events"), b"acc-pii", f'{{"email": "{PII["email"]}"}}'.encode())
        emitter.send_raw(settings.topic("account-events"), b"acc-pii", valid[:-3])
        emitter.send_raw(settings.topic("account-events"), b"acc-pii",
                         b"\x00" + struct.pack(">I", 1) + valid[5:])
        wrong = dict(registered, event_type="account.updated")
        emitter.send_raw(settings.topic("account-events"), b"acc-pii",
                         emitter.codec.encode("AccountRegistered", wrong))
    status, _ = post(worker.url("/v1/events"), dict(registered, phone=12, email=PII["email"]), settings.http_token)
    assert status == 400
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_rejected_total", topic="account-events") == 4,
             what="four dead letters")
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_ingested_total",
                            event_type="session.login_failed") == 1, what="the failed login")

    _, body = http_get(worker.url("/metrics"))
    consumer = KafkaConsumer(settings.topic("dead-letters"), bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=2000, session_timeout_ms=6000)
    try:
        headers = b" ".join(v for msg in consumer for _, v in msg.headers)
    finally:
        consumer.close()
    assert headers, "no dead letters were read"
    places = {"metrics": body, "dead-letter headers": headers, "worker log": worker.log_path.read_bytes()}
    hits = [f"{name} holds {key}" for name, text in places.items() for key, value in PII.items()
            if value.encode() in text]
    assert hits == []
