"""`lifecycle export` and `lifecycle dlq list|replay` as a privacy contact or an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from kafka import KafkaConsumer

from lifecycle.connectors.emitter import Emitter
from tests.helpers import MINUTE, T0, event, metric, wait_for


def _run(settings, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")} | settings.to_env()
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_export_shows_what_is_held_about_an_account(settings, worker):
    (settings.files_dir / "acc-x" / "documents").mkdir(parents=True)
    (settings.files_dir / "acc-x" / "documents" / "q1.csv").write_text("x")
    with Emitter(settings) as emitter:
        for e in (event("account.registered", T0, account="acc-x", email="x@example.test", first_name="X",
                        last_name="Y"),
                  event("consent.cookies_granted", T0 + 1, account="acc-x", visitor="vis-x", purposes=["analytics"],
                        policy_version="2026-01"),
                  event("session.started", T0 + MINUTE, account="acc-x", session_id="sx", ip="198.51.100.60",
                        login_method="sso"),
                  event("session.ended", T0 + 2 * MINUTE, account="acc-x", session_id="sx", reason="logout")):
            emitter.emit(e)
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_session_logs_written_total") == 1, what="the log")
    done = _run(settings, "export", "acc-x")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["profile"][0]["email"] == "x@example.test"
    assert [s["session_id"] for s in data["session_logs"]] == ["sx"]
    assert data["linked_visitors"] == [{"visitor_id": "vis-x"}]
    assert data["consent_current"][0]["purpose"] == "analytics"
    assert data["files"] == ["documents/q1.csv"]
    assert _run(settings, "export", "acc-nobody").returncode == 1


def test_dlq_list_and_replay(settings, worker):
    with Emitter(settings) as emitter:
        emitter.send_raw(settings.topic("consent-events"), b"vis-d", b"not avro at all")
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_dead_letters_written_total") == 1, what="a letter")
    listed = _run(settings, "dlq", "list")
    assert listed.returncode == 0
    row = json.loads(listed.stdout.splitlines()[0])
    assert row["reason"].startswith("not_confluent_framed") and row["origin"].startswith(
        settings.topic("consent-events"))
    assert "not avro" not in listed.stdout  # reasons and origins, never the bytes

    replay = _run(settings, "dlq", "replay", "--reason", "not_confluent_framed")
    assert replay.returncode == 0 and "replayed 1" in replay.stdout
    consumer = KafkaConsumer(settings.topic("consent-events"), bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=2000, session_timeout_ms=6000)
    try:
        records = list(consumer)
    finally:
        consumer.close()
    assert [r.value for r in records] == [b"not avro at all", b"not avro at all"]
    assert dict(records[1].headers)["lifecycle.replayed-from"]
    # Replayed once: the same letter is not sent again by the next run.
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_dead_letters_written_total") == 2, what="again")
    again = _run(settings, "dlq", "replay", "--reason", "not_confluent_framed")
    assert "replayed 1" in again.stdout  # only the new letter from the replayed record
