"""Erasure fan-out on the real broker, PostgreSQL, Redis and a files folder (docs/erasure.md, docs/protocol.md)."""

from __future__ import annotations

import json
import time

import psycopg
import redis
from kafka import KafkaConsumer

from lifecycle.schemas import Codec
from tests.helpers import DAY, HOUR, MINUTE, T0, emit, erasure_answer, event, metric, wait_for
from tests.unit.samples import PII

ACC = "acc-erase-1"
VIS = "vis-erase-1"


_emit = emit
_erasure = erasure_answer


def _complete(worker, account):
    answer = _erasure(worker, account)
    return answer if answer and answer["erasures"][0]["state"] == "complete" else None


def _life_of(account, visitor, start=T0):
    """An account with a verified address, a newsletter subscription, consents, two sessions
    (one ended with files, one still open), a failed login and page views."""
    return [
        event("account.registered", start, account=account, email=PII["email"], first_name=PII["first_name"],
              last_name=PII["last_name"], phone=PII["phone"]),
        event("account.email_verified", start + 1, account=account),
        event("consent.cookies_granted", start + 2, account=account, visitor=visitor,
              purposes=["necessary", "analytics"], policy_version="2026-01"),
        event("consent.newsletter_subscribed", start + 3, account=account),
        event("session.started", start + MINUTE, account=account, session_id=f"{account}-s1", ip=PII["ip"],
              login_method="password"),
        event("session.file_transferred", start + 2 * MINUTE, account=account, session_id=f"{account}-s1",
              mime_type="application/pdf", size_bytes=1234),
        event("session.ended", start + 3 * MINUTE, account=account, session_id=f"{account}-s1", reason="logout"),
        event("session.started", start + 4 * MINUTE, account=account, session_id=f"{account}-s2", ip=PII["ip"],
              login_method="password"),
        event("session.login_failed", start + 5 * MINUTE, account=account, ip=PII["ip"]),
        event("analytics.page_viewed", start + 6 * MINUTE, visitor=visitor, account=account, path="/app"),
    ]


def _seed_outside_stores(settings, account):
    folder = settings.files_dir / account
    (folder / "documents").mkdir(parents=True)
    (folder / "documents" / "contract.pdf").write_bytes(b"%PDF " + PII["last_name"].encode())
    (folder / "settings.json").write_text(json.dumps({"owner": PII["email"]}))
    client = redis.Redis.from_url(settings.redis_url)
    client.set(f"cache:{{{account}}}:profile", PII["email"])
    client.hset(f"session:{{{account}}}:s2", mapping={"ip": PII["ip"]})
    client.sadd("lifecycle:index:active", account, "someone-else")
    client.close()


def _sweep_postgres(settings, needles):
    """Every text-like column of every table, in every schema the pipeline uses. Each table in a
    transaction of its own: one transaction holding a lock on every table read so far deadlocked
    with the worker creating and dropping dedupe partitions (CI, once in three runs)."""
    hits = []
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema IN ('public', 'mailing') AND table_type = 'BASE TABLE'").fetchall()
        for schema, table in tables:
            try:
                rows = conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t').fetchall()
            except psycopg.errors.UndefinedTable:  # a dedupe partition dropped since the listing
                continue
            for (text,) in rows:
                hits.extend(f"{schema}.{table}: {n}" for n in needles if n in text)
    return hits


def _last_by_key(settings, topic):
    consumer = KafkaConsumer(settings.topic(topic), bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=2000, session_timeout_ms=6000)
    last = {}
    try:
        for msg in consumer:
            last[msg.key] = msg.value
    finally:
        consumer.close()
    return last


def test_closing_an_account_erases_it_everywhere_and_proves_it(settings, worker, connectors):
    _seed_outside_stores(settings, ACC)
    _emit(settings, *_life_of(ACC, VIS))
    wait_for(lambda: _sweep_postgres(settings, [ACC]), what="the account's data in PostgreSQL")
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_ingested_total") >= 10, what="all events")
    _emit(settings, event("account.closed", T0 + HOUR, account=ACC))
    answer = wait_for(lambda: _complete(worker, ACC), deadline_s=60, what="the erasure to complete")
    erasure = answer["erasures"][0]
    assert {s["store"] for s in erasure["stores"]} == set(settings.erasure_stores)
    by_store = {s["store"]: s for s in erasure["stores"]}
    assert by_store["postgres"]["status"] == "erased" and by_store["postgres"]["items_erased"] > 5
    assert by_store["files"]["status"] == "erased" and by_store["files"]["items_erased"] == 2
    if "redis" in by_store:
        assert by_store["redis"]["status"] == "erased" and by_store["redis"]["items_erased"] == 3
    assert by_store["mailing-list"]["status"] in ("erased", "nothing_found")

    needles = [ACC, VIS, *PII.values()]
    assert _sweep_postgres(settings, needles) == []
    client = redis.Redis.from_url(settings.redis_url)
    try:
        keys = [k.decode() for k in client.scan_iter(match="*")]
        assert not [k for k in keys if ACC in k or any(v in (client.dump(k) or b"").decode(errors="ignore")
                                                      for v in PII.values())]
        assert client.sismember("lifecycle:index:active", "someone-else")
        assert not client.sismember("lifecycle:index:active", ACC)
    finally:
        client.close()
    assert not any(ACC in str(p) for p in settings.files_dir.rglob("*"))
    for path in settings.files_dir.rglob("*"):
        if path.is_file():
            assert not any(v.encode() in path.read_bytes() for v in PII.values())

    # Kafka forgets too: the last record for each identifier on every compacted topic is null.
    assert _last_by_key(settings, "accounts")[ACC.encode()] is None
    consents = _last_by_key(settings, "consents")
    assert consents[ACC.encode()] is None and consents[VIS.encode()] is None

    # The proof: complete, counts and times, and nothing personal in it anywhere.
    with psycopg.connect(settings.postgres_dsn) as conn:
        proof = conn.execute("SELECT t::text FROM erasure_proofs t").fetchall()
        ledger = conn.execute("SELECT t::text FROM erasure_requests t").fetchall()
    assert len(proof) == 1
    statuses = [Codec().decode(v, topic="erasure-status").value
                for v in _last_by_key(settings, "erasure-status").values()]
    assert statuses[-1]["state"] == "complete"
    text = json.dumps([proof, ledger, statuses, answer])
    assert not [n for n in needles if n in text]


def test_late_events_after_closure_are_suppressed_and_counted(settings, worker, connectors):
    _emit(settings, *_life_of("acc-late", "vis-late"))
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_ingested_total") >= 10, what="all events")
    _emit(settings, event("account.closed", T0 + HOUR, account="acc-late"))
    wait_for(lambda: _complete(worker, "acc-late"), deadline_s=60, what="the erasure")
    _emit(settings,
          event("session.started", T0 + 2 * HOUR, account="acc-late", session_id="late-s", ip=PII["ip"],
                login_method="password"),
          event("consent.cookies_granted", T0 + 2 * HOUR, visitor="vis-late", purposes=["analytics"],
                policy_version="2026-01"),
          event("account.updated", T0 + 2 * HOUR, account="acc-late", email=PII["email"]))
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_suppressed_total") == 3,
             what="three suppressed events")
    assert metric(worker.url("/metrics"), "lifecycle_events_suppressed_total", event_type="session.started") == 1
    time.sleep(2)  # a tick and a relay round: nothing may come back
    assert _sweep_postgres(settings, ["acc-late", "vis-late", PII["email"], PII["ip"]]) == []


def test_a_store_that_is_down_stays_pending_is_overdue_and_completes_when_back(settings, worker, connectors):
    connectors["files"].stop()
    (settings.files_dir / "acc-down").mkdir(parents=True)
    (settings.files_dir / "acc-down" / "doc.txt").write_text("x")
    _emit(settings, event("account.registered", T0, account="acc-down", email="d@example.test", first_name="D",
                          last_name="E"),
          event("account.closed", T0 + HOUR, account="acc-down"))
    pending = wait_for(lambda: (a := _erasure(worker, "acc-down")) and
                       {s["store"]: s["status"] for s in a["erasures"][0]["stores"]}.get("postgres") == "erased"
                       and a, deadline_s=60, what="the other stores")
    assert pending["erasures"][0]["state"] == "open"
    assert {s["store"]: s["status"] for s in pending["erasures"][0]["stores"]}["files"] == "pending"
    # Retried while down (backoff 2 s, 4 s, ...).
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_erasure_orders_reissued_total") >= 2,
             what="re-issued orders")
    assert metric(worker.url("/metrics"), "lifecycle_erasure_requests_overdue") == 0
    # 31 days later on the policy clock: overdue, and the gauge says so.
    _emit(settings, event("session.login_failed", T0 + HOUR + 31 * DAY, account="clock-mover"))
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_erasure_requests_overdue") == 1, what="overdue")
    assert _erasure(worker, "acc-down")["erasures"][0]["overdue"] is True

    connectors["files"].spawn()
    wait_for(lambda: _complete(worker, "acc-down"), deadline_s=90, what="completion once the store is back")
    assert not (settings.files_dir / "acc-down").exists()
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_erasure_requests_overdue") == 0, what="gauge back")
