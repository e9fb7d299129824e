"""The personal-data leak sweep (issue 7): recognisable personal data in, every account closed,
then every place that must not hold it is read: each process's log, every metric label of the
worker and of every connector, every dead-letter header, the proofs of erasure and the ledger,
every table, the files and Redis stores, the compacted topics, every record any topic received
after the erasures completed, and every record of every topic from offset 0 (personal fields
are sealed under keys the erasures destroyed: docs/crypto-shredding.md). Zero hits, or the
failure names where. The log-level sweep of the demo's and the fault tests' logs is
tests/conftest.py's, at the end of the run."""

from __future__ import annotations

import json
import time

import psycopg
import redis
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from lifecycle.connectors.emitter import Emitter
from lifecycle.streams.runtime.decoding import DLQ_HEADER_PREFIX
from lifecycle.supervisor import http_get
from lifecycle.topics import load_spec
from tests.faults.load import Load
from tests.helpers import T0, event, wait_for
from tests.integration.erasure.test_erasure import _last_by_key, _sweep_postgres
from tests.unit.samples import PII


def _labels(url: str) -> set[str]:
    status, body = http_get(url)
    assert status == 200, url
    return {v for f in text_string_to_metric_families(body.decode()) for s in f.samples for v in s.labels.values()}


def _ends(settings) -> dict:
    """The next offset of every partition of every topic, read off the log itself (this broker's
    ListOffsets(latest) can be wrong; DESIGN.md)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, consumer_timeout_ms=2000,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        parts = [TopicPartition(settings.topic(s.name), p) for s in load_spec(settings.topic_spec)
                 for p in range(s.partitions)]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        ends = {tp: 0 for tp in parts}
        for msg in consumer:
            tp = TopicPartition(msg.topic, msg.partition)
            ends[tp] = max(ends[tp], msg.offset + 1)
        return ends
    finally:
        consumer.close()


def _records_after(settings, ends: dict) -> list:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, consumer_timeout_ms=2000,
                             enable_auto_commit=False)
    try:
        consumer.assign(list(ends))
        for tp, offset in ends.items():
            consumer.seek(tp, offset)
        return list(consumer)
    finally:
        consumer.close()


def test_no_personal_data_where_it_does_not_belong(settings, worker, connectors):
    load = Load(settings, tag="leak")
    load.lives(until=lambda: len(load.accounts) >= 20, per_chunk=10, pause_s=0.2)
    client = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
    for i in load.accounts:
        (settings.files_dir / load.account(i) / "profile.json").write_text(json.dumps(PII))
        if client is not None:
            client.set(f"cache:{{{load.account(i)}}}:profile", PII["email"])
    broken = [json.dumps(PII).encode(), b"\x00\x00\x00\x00\x07" + PII["email"].encode()]
    with Emitter(settings) as emitter:  # broken records carrying personal data: dead letters
        emitter.send_raw(settings.topic("account-events"), load.account(0).encode(), broken[0])
        emitter.send_raw(settings.topic("session-events"), load.account(1).encode(), broken[1])
    wait_for(lambda: _count(settings, "SELECT count(*) FROM processed_events") >= len(load.accepted),
             deadline_s=90, what="the lives applied")

    with Emitter(settings) as emitter:  # every account closed, this time
        for i in load.accounts:
            emitter.emit(event("account.closed", T0 + 10 * 86_400_000, account=load.account(i)))
    wait_for(lambda: _count(settings, "SELECT count(*) FROM erasure_requests WHERE state = 'complete'")
             == len(load.accounts), deadline_s=120, what="every erasure complete")
    ends = _ends(settings)
    time.sleep(4)  # ticks, relays, re-issues: anything that would write again after completion

    ids = [load.account(i) for i in load.accounts] + [f"vis-leak{i:05d}" for i in load.accounts]
    needles = [*PII.values(), *ids]
    hits: list[str] = []

    for where, url in [("worker", worker.url("/metrics"))] + [
            (f"connector {n}", f"http://127.0.0.1:{p.extra_env['LIFECYCLE_METRICS_PORT']}/metrics")
            for n, p in connectors.items()]:
        hits += [f"metric label of {where}: {v}" for v in _labels(url) if any(n in v for n in needles)]

    consumer = KafkaConsumer(settings.topic("dead-letters"), bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=2000)
    letters = list(consumer)
    consumer.close()
    assert len(letters) == 2
    for msg in letters:
        hits += [f"dead-letter header {k}" for k, v in msg.headers
                 if k.startswith(DLQ_HEADER_PREFIX) and any(n.encode() in v for n in needles)]

    with psycopg.connect(settings.postgres_dsn) as conn:
        for table in ("erasure_proofs", "erasure_requests", "erasure_progress", "suppressed_subjects"):
            text = json.dumps([r[0] for r in conn.execute(f"SELECT t::text FROM {table} t").fetchall()])
            hits += [f"{table}: {n}" for n in needles if n in text]
    hits += _sweep_postgres(settings, needles)

    for path in settings.files_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"file {path.relative_to(settings.files_dir)}" for n in needles if n.encode() in data]
        hits += [f"file name {path.relative_to(settings.files_dir)}" for n in ids if n in path.name]
    if client is not None:
        for key in client.scan_iter(match="*"):
            value = client.dump(key) or b""
            hits += [f"redis key {key!r}" for n in needles if n.encode() in key or n.encode() in value]
        client.close()

    for topic in ("accounts", "consents"):
        last = _last_by_key(settings, topic)
        hits += [f"{topic}: the last record of {k!r} is not a tombstone" for k, v in last.items()
                 if v is not None and any(n.encode() == k for n in ids)]
    for msg in _records_after(settings, ends):
        blob = (msg.key or b"") + (msg.value or b"")
        hits += [f"{msg.topic} after erasure: {n}" for n in needles if n.encode() in blob]
    # Every record of every topic from offset 0: personal data is sealed under keys the erasures
    # destroyed (docs/crypto-shredding.md). Only the two records this test wrote in clear itself, as
    # a producer outside the pipeline, hold it; their dead letters do not.
    foreign = {bytes(v) for v in broken}
    seen_foreign = 0
    for msg in _records_after(settings, {tp: 0 for tp in ends}):
        if msg.value in foreign:
            seen_foreign += 1
            continue
        blob = (msg.value or b"") + b"".join(v for _, v in msg.headers or [])
        hits += [f"{msg.topic}@{msg.partition}:{msg.offset}: {k}" for k, v in PII.items() if v.encode() in blob]
    assert seen_foreign == len(foreign)

    for log in settings.state_dir.parent.rglob("*.log"):
        data = log.read_bytes()
        hits += [f"log {log.name}: {k}" for k, v in PII.items() if v.encode() in data]

    assert hits == []


def _count(settings, sql):
    with psycopg.connect(settings.postgres_dsn) as conn:
        return conn.execute(sql).fetchone()[0]
