"""Hostile input (issue 7): more than 10,000 inputs against a running worker on the wall clock:
a hypothesis property test on the HTTP API and a seeded fuzz corpus of raw records on the input
topics. Every bad input is answered 4xx with its reason or lands in dead-letters with its reason
and its bytes intact; the valid events around them are applied exactly once; the worker stays up."""

from __future__ import annotations

import dataclasses
import random
import struct
import time

import psycopg
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from kafka import KafkaConsumer

from lifecycle.connectors.emitter import Emitter
from lifecycle.schemas import Codec
from lifecycle.streams.runtime.decoding import DLQ_HEADER_PREFIX
from tests.fix_servers import WorkerProcess
from tests.helpers import event, metric, opened_letter, post, wait_for
from tests.unit.samples import PII

HTTP_EXAMPLES = 2500
CORPUS = 8000
REASONS = {"not_confluent_framed", "unknown_schema_id", "malformed_avro", "schema_mismatch",
           "schema_not_allowed_on_topic",
           "invalid_event"}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _valid(n: int, at: int, account: str | None = None) -> dict:
    return event("session.login_failed", at, account=account or f"acc-ok{n % 50}", ip="198.51.100.7",
                 failure_reason="bad_password")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30) | st.text(min_size=5000, max_size=6000),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)
_fields = st.sampled_from(["event_id", "event_type", "occurred_at", "account_id", "visitor_id", "source", "ip",
                           "session_id", "login_method", "size_bytes", "purposes", "email", "nested"])


def _http_bodies(now: int):
    base = st.builds(lambda n: _valid(n, now), st.integers(0, 10**6))
    mutated = st.builds(lambda b, k, v: {**b, k: v}, base, _fields, _json)
    dropped = st.builds(lambda b, k: {x: y for x, y in b.items() if x != k}, base, _fields)
    timed = st.builds(lambda b, t: {**b, "occurred_at": t}, base,
                      st.sampled_from([0, -1, 946_684_799_999, now + 3 * 86_400_000, 2**62, "2099-01-01T00:00:00Z"]))
    unknown = st.builds(lambda b, t: {**b, "event_type": t}, base, st.text(max_size=40))
    deep = st.integers(50, 5000).map(  # raw JSON: deeper than any JSON library nests
        lambda d: ('{"event_type": "session.started", "nested": ' + "[" * d + "]" * d + "}").encode())
    return st.one_of(base, mutated, dropped, timed, unknown, deep, st.lists(st.one_of(base, mutated), max_size=5))


def _corpus(codec: Codec, now: int, rng: random.Random, gone: str) -> tuple[list, list, dict]:
    """(records to send, valid event ids that must be applied, bad count by category)."""
    records, valid_ids, bad = [], [], {}

    def add_bad(kind, value):
        records.append(("bad", kind, value))
        bad[kind] = bad.get(kind, 0) + 1

    registered = codec.encode_event(event("account.registered", now, account="acc-x", email="x@example.test",
                                          first_name="X", last_name="Y"))
    for n in range(CORPUS):
        if n % 4 == 0:  # the valid events around the bad ones
            e = _valid(n, now - rng.randint(0, 86_400_000))
            valid_ids.append(e["event_id"])
            records.append(("valid", None, codec.encode_event(e)))
            continue
        good = codec.encode_event(_valid(n, now))
        kind = rng.choice(["magic", "schema_id", "truncated", "utf8", "wrong_record", "not_uuid", "junk", "empty",
                           "null", "huge", "far_past", "future", "duplicate", "erased"])
        if kind == "magic":
            add_bad(kind, bytes([rng.randint(1, 255)]) + good[1:])
        elif kind == "schema_id":
            add_bad(kind, b"\x00" + struct.pack(">I", rng.randint(1, 2**31 - 1) | 1) + good[5:])
        elif kind == "truncated":
            add_bad(kind, good[:rng.randint(5, len(good) - 1)])
        elif kind == "utf8":
            add_bad(kind, good.replace(b"198.51.100.7", b"\xff\xfe8.51.100.7"))
        elif kind == "wrong_record":
            add_bad(kind, registered)
        elif kind == "not_uuid":
            add_bad(kind, codec.encode_event(_valid(n, now) | {"event_id": "not-a-uuid"}))
        elif kind == "junk":
            add_bad(kind, rng.randbytes(rng.randint(1, 200)))
        elif kind == "empty":
            add_bad(kind, b"")
        elif kind == "null":
            add_bad(kind, None)
        elif kind == "huge":
            add_bad(kind, good[:5] + rng.randbytes(200_000))
        elif kind == "far_past":
            add_bad(kind, codec.encode_event(_valid(n, 631_152_000_000)))  # 1990
        elif kind == "future":
            add_bad(kind, codec.encode_event(_valid(n, now + 7 * 86_400_000)))
        elif kind == "duplicate":  # the last valid record again: applied once, not dead-lettered
            records.append(("duplicate", kind, next(v for k, _, v in reversed(records) if k == "valid")))
        else:  # an event for an erased account: suppressed, not dead-lettered
            records.append(("erased", kind, codec.encode_event(_valid(n, now, account=gone))))
    return records, valid_ids, bad


def test_ten_thousand_hostile_inputs(settings, tmp_path):
    own = dataclasses.replace(settings, clock="wall")  # so that a future timestamp is recognisable
    worker = WorkerProcess(own, tmp_path / "worker.log")
    worker.start()
    try:
        url = worker.url("/v1/events")
        now = _now_ms()
        accepted_http: list[str] = []

        # An erased account, so that its late events are suppressed.
        gone = "acc-gone"
        status, _ = post(url, [event("account.registered", now - 5000, account=gone, email=PII["email"],
                                     first_name=PII["first_name"], last_name=PII["last_name"]),
                               event("account.closed", now - 4000, account=gone)], own.http_token)
        assert status == 202
        wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_erasure_requests_opened_total") == 1,
                 what="the erasure of the account whose events come late")

        @hyp_settings(max_examples=HTTP_EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
        @given(body=_http_bodies(now))
        def http(body):
            raw = body if isinstance(body, bytes) else None
            status, answer = post(url, None if raw else body, own.http_token, raw=raw)
            assert status in (202, 400, 413), (status, answer)
            if status == 202:
                accepted_http.extend(answer["event_ids"])
            else:
                assert answer["errors"] and all({"field", "problem"} <= set(e) for e in answer["errors"])
                assert not any(v in str(answer) for v in PII.values())

        http()
        assert worker.alive()

        codec = Codec(topic_prefix=own.topic_prefix)
        records, valid_ids, bad = _corpus(codec, now, random.Random(7), gone)
        topic = own.topic("session-events")
        with Emitter(own) as emitter:
            for _, _, value in records:
                emitter.send_raw(topic, b"acc-fuzz", value)
            emitter.flush(timeout_s=120)
        total_bad = sum(bad.values())
        assert len(records) + HTTP_EXAMPLES >= 10_000

        letters = _read(own, total_bad)
        assert len(letters) == total_bad, f"{len(letters)} dead letters for {total_bad} bad records"
        sent_bad = sorted((v or b"") for kind, _, v in records if kind == "bad")
        letter_values = []
        for msg in letters:
            headers = dict(msg.headers)
            assert headers[DLQ_HEADER_PREFIX + "reason"].decode() in REASONS
            assert headers[DLQ_HEADER_PREFIX + "topic"].decode() == topic
            letter = codec.decode(msg.value, topic="dead-letters").value
            opened = opened_letter(own, msg, letter)
            assert opened is not None
            letter_values.append(opened[1] or b"")
        assert sorted(letter_values) == sent_bad  # every bad record's bytes, intact

        wanted = set(valid_ids) | set(accepted_http)
        with psycopg.connect(own.postgres_dsn) as conn:
            wait_for(lambda: _applied(conn, wanted) == len(wanted), deadline_s=120, what="every valid event applied")
            assert conn.execute("SELECT count(*) FROM failed_logins WHERE account_id = %s", (gone,)).fetchone()[0] == 0
        suppressed = sum(1 for kind, _, _ in records if kind == "erased")
        wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_suppressed_total") >= suppressed,
                 what="late events of the erased account suppressed")
        assert worker.alive()
    finally:
        worker.stop()


def _applied(conn, ids) -> int:
    return conn.execute("SELECT count(*) FROM processed_events WHERE event_id = ANY(%s::uuid[])",
                        (list(ids),)).fetchone()[0]


def _read(settings, expected: int, deadline_s: float = 120) -> list:
    consumer = KafkaConsumer(settings.topic("dead-letters"), bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=2000, session_timeout_ms=6000,
                             fetch_max_bytes=50 * 1024 * 1024, max_partition_fetch_bytes=10 * 1024 * 1024)
    out: list = []
    end = time.monotonic() + deadline_s
    try:
        while len(out) < expected and time.monotonic() < end:
            out.extend(consumer)
        out.extend(consumer)  # and nothing more than expected
    finally:
        consumer.close()
    return out
