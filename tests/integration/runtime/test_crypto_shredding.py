"""Crypto-shredding (issue 14): personal data is sealed under its subject's data key in every
record the pipeline or its SDK writes, and an erasure destroys the keys, so what the log keeps of
an erased person is unreadable in every topic, offset and copy.

The foreign reader is examples/read_topics.py: kafka-python, fastavro and `cryptography`, the
published schemas and the key service, no code of the pipeline."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import psycopg
import pytest
from kafka import KafkaConsumer, TopicPartition

from lifecycle.connectors.emitter import Emitter
from lifecycle.core.config import PROJECT_ROOT
from lifecycle.core.crypto import ERASED, MasterKeyMismatch
from lifecycle.core.datakeys import open_data_keys
from lifecycle.embedded.process import free_port
from lifecycle.schemas import Codec
from lifecycle.topics import load_spec
from tests.helpers import HOUR, MINUTE, T0, emit, erasure_answer, event, metric, post, wait_for
from tests.integration.erasure.test_erasure import _life_of
from tests.unit.samples import PII

READER = PROJECT_ROOT / "examples" / "read_topics.py"
NEEDLES = [PII["email"], PII["first_name"], PII["last_name"], PII["phone"], PII["ip"]]


def _complete(worker, account, n=1):
    answer = erasure_answer(worker, account)
    states = [e["state"] for e in answer["erasures"]] if answer else []
    return len(states) >= n and all(s == "complete" for s in states)


def _foreign_read(settings, *topics):
    """The example reader's records (JSON), run as its own process."""
    args = [sys.executable, str(READER), "--bootstrap", settings.kafka_bootstrap, "--prefix", settings.topic_prefix,
            "--keys-url", f"http://{settings.http_host}:{settings.http_port}", "--keys-token", settings.keys_token,
            "--idle-ms", "1500"]
    for topic in topics:
        args += ["--topic", topic]
    proc = subprocess.run(args, capture_output=True, timeout=120, env={"PATH": os.environ.get("PATH", "")},
                          cwd="/")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def _raw_records(settings):
    """Every record of every topic from offset 0, as bytes."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=2000)
    try:
        consumer.assign([TopicPartition(settings.topic(s.name), p) for s in load_spec(settings.topic_spec)
                         for p in range(s.partitions)])
        consumer.seek_to_beginning()
        return list(consumer)
    finally:
        consumer.close()


def _clear_hits(settings, *, skip=lambda msg: False):
    hits = []
    for msg in _raw_records(settings):
        if skip(msg):
            continue
        blob = (msg.key or b"") + (msg.value or b"") + b"".join(k.encode() + v for k, v in msg.headers or [])
        hits += [f"{msg.topic}@{msg.partition}:{msg.offset}: {n}" for n in NEEDLES if n.encode() in blob]
    return hits


def _foreign_broken(msg):
    """The one record the test itself writes in clear, as a foreign producer: not Confluent-framed."""
    return msg.value is not None and msg.value[:1] == b"{"


def _values(records, topic, field):
    return [r["value"].get(field) for r in records if r["topic"].endswith(topic) and "value" in r]


def test_a_foreign_reader_opens_personal_data_until_the_erasure_and_never_after(settings, worker, connectors):
    acc, vis = "acc-shred-1", "vis-shred-1"
    emit(settings, *_life_of(acc, vis),
         event("consent.newsletter_subscribed", T0 + 4, account=acc, email=PII["email"]))
    # One update over HTTP (sealed by the endpoint), one broken record carrying the address (a
    # foreign producer's, in clear on its own topic), one valid event from a producer that does not seal.
    status, _ = post(worker.url("/v1/events"), event("account.updated", T0 + 5, account=acc,
                                                     first_name=PII["first_name"]), settings.http_token)
    assert status == 202
    with Emitter(settings, encrypt=False) as foreign:
        foreign.send_raw(settings.topic("account-events"), acc.encode(), json.dumps(PII).encode())
        foreign.emit(event("session.login_failed", T0 + 6 * MINUTE, account=acc, ip="203.0.113.99"))
    with psycopg.connect(settings.postgres_dsn) as conn:
        wait_for(lambda: conn.execute("SELECT count(*) FROM processed_events").fetchone()[0] >= 13, deadline_s=60,
                 what="the life applied")
        # The processors work on clear values: the intake opened them.
        assert conn.execute("SELECT email, phone FROM accounts WHERE account_id = %s", (acc,)).fetchone() == (
            PII["email"], PII["phone"])
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_clear_personal_fields_total",
                            topic="session-events") >= 1, what="the clear field counted")
    wait_for(lambda: any(r["value"].get("ip") for r in _foreign_read(settings, "session-logs") if "value" in r),
             deadline_s=30, what="the session log published")

    assert _clear_hits(settings, skip=_foreign_broken) == []  # sealed everywhere, before any erasure
    before = _foreign_read(settings)
    assert PII["email"] in _values(before, "accounts", "email")
    assert PII["phone"] in _values(before, "account-events", "phone")
    assert PII["first_name"] in _values(before, "accounts", "first_name")
    assert PII["ip"] in _values(before, "session-logs", "ip")
    assert PII["email"] in _values(before, "consent-events", "email")
    [letter] = [r for r in before if r["topic"].endswith("dead-letters")]
    assert PII["email"] in letter["value"]["original_value"]  # the dead letter opens under the account's key

    emit(settings, event("account.closed", T0 + HOUR, account=acc))
    wait_for(lambda: _complete(worker, acc), deadline_s=90, what="the erasure")
    time.sleep(2)  # relays and ticks that would write again

    assert _clear_hits(settings, skip=_foreign_broken) == []
    assert sum(1 for m in _raw_records(settings) if _foreign_broken(m)) == 1
    after = _foreign_read(settings)
    # A Confluent-format client decodes every record of every topic with the schemas alone.
    assert [r.get("undecoded") for r in after if "value" not in r].count("not a record of these schemas") == 1
    assert len([r for r in after if "value" in r]) > 20
    for topic, field in (("account-events", "email"), ("account-events", "phone"), ("session-events", "ip"),
                         ("session-logs", "ip"), ("consent-events", "email")):
        opened = [v for v in _values(after, topic, field) if v is not None]
        assert opened and set(opened) <= {ERASED, "203.0.113.99"}, (topic, field, opened)
    [letter] = [r for r in after if r["topic"].endswith("dead-letters")]
    assert letter["value"]["original_value"] == ERASED
    with psycopg.connect(settings.postgres_dsn) as conn:
        destroyed = conn.execute("SELECT keys_destroyed_at FROM erasure_proofs").fetchone()[0]
        assert destroyed is not None
        assert erasure_answer(worker, acc)["erasures"][0]["keys_destroyed_at"] is not None
        assert conn.execute("SELECT count(*) FROM data_keys WHERE wrapped IS NOT NULL AND category <> "
                            "'dead_letters'").fetchone()[0] == 0


def test_a_value_moved_to_another_subject_is_refused_and_a_cold_worker_opens_the_rest(settings, worker,
                                                                                      tmp_path):
    victim, thief = "acc-victim", "acc-thief"
    emit(settings, event("account.registered", T0, account=victim, email=PII["email"], first_name="V",
                         last_name="W"),
         event("account.registered", T0 + 1, account=thief, email="thief@example.test", first_name="T",
               last_name="X"))
    with psycopg.connect(settings.postgres_dsn) as conn:
        wait_for(lambda: conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 2, what="both applied")
    [sealed] = [r for r in _raw_records(settings) if r.topic == settings.topic("account-events") and r.key ==
                victim.encode()]
    codec = Codec(topic_prefix=settings.topic_prefix)
    stolen = codec.decode(sealed.value).value["email"]
    assert stolen.startswith("lc1:")

    worker.stop()  # the next worker starts with no key in memory
    forged = event("account.updated", T0 + 2, account=thief, email=stolen)
    fresh = event("account.updated", T0 + 3, account=thief, first_name="Cold")
    with Emitter(settings) as emitter:
        emitter.send_raw(settings.topic("account-events"), thief.encode(), codec.encode_event(
            {**forged, "first_name": None, "last_name": None, "phone": None}))
        emitter.emit(fresh)
    worker.start()
    with psycopg.connect(settings.postgres_dsn) as conn:
        wait_for(lambda: conn.execute("SELECT first_name FROM accounts WHERE account_id = %s",
                                      (thief,)).fetchone()[0] == "Cold", what="the sealed update opened")
        assert conn.execute("SELECT email FROM accounts WHERE account_id = %s", (thief,)).fetchone()[0] == \
            "thief@example.test"
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_rejected_total", topic="account-events",
                            reason="forged_ciphertext") == 1, what="the forged value dead-lettered")


def test_a_wrong_master_key_stops_the_start_with_a_clear_error(settings, worker):
    wrong = dataclasses.replace(settings, master_key="11" * 32)
    with pytest.raises(MasterKeyMismatch, match="does not open this database's data keys"):
        open_data_keys(wrong)
    env = {**os.environ, **wrong.to_env(), "LIFECYCLE_HTTP_PORT": str(free_port())}
    proc = subprocess.run([sys.executable, "-m", "lifecycle", "worker"], env=env, capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert b"does not open this database's data keys" in proc.stderr
    assert ("11" * 32).encode() not in proc.stderr


def test_keys_under_legal_hold_survive_until_the_hold_is_released(settings, worker, connectors):
    acc = "acc-shred-held"
    emit(settings, event("account.registered", T0, account=acc, email=PII["email"], first_name="H", last_name="L"),
         event("session.started", T0 + MINUTE, account=acc, session_id="s-held", ip=PII["ip"],
               login_method="password"),
         event("account.legal_hold_set", T0 + 2 * MINUTE, account=acc, hold_reference="case-7"),
         event("account.closed", T0 + HOUR, account=acc))
    wait_for(lambda: _complete(worker, acc), deadline_s=90, what="the erasure under hold")

    def opened(topic, field):
        return [v for v in _values(_foreign_read(settings, topic), topic, field) if v is not None]

    assert opened("account-events", "email") == [ERASED]  # account_profile: no hold on it
    assert opened("session-events", "ip") == [PII["ip"]]  # session_logs: kept by the hold
    emit(settings, event("account.legal_hold_released", T0 + 2 * HOUR, account=acc))
    wait_for(lambda: _complete(worker, acc, n=2), deadline_s=90, what="the erasure the release opens")
    assert opened("session-events", "ip") == [ERASED]
    with psycopg.connect(settings.postgres_dsn) as conn:
        kept = conn.execute("SELECT keys_kept FROM erasure_proofs ORDER BY opened_at").fetchall()
        assert "session_logs" in kept[0][0] and kept[1][0] == []
