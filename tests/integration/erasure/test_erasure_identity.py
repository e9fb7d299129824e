"""Erasure never silences or resurrects the wrong person (issue 12): shared identifiers, clock-driven
writes during an open erasure, outbox order across workers, legal-hold events after an erasure,
keyed pseudonyms, and poison records on the internal paths. Real broker, PostgreSQL and stores."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import time

import psycopg
from kafka import KafkaProducer

from lifecycle.embedded.process import free_port
from lifecycle.schemas import Codec
from lifecycle.supervisor import http_get
from tests.fix_servers import WorkerProcess
from tests.helpers import DAY, HOUR, MINUTE, T0, emit, erasure_answer, event, last_by_key, metric, records, wait_for

MONTH = 31 * DAY


_emit = emit


def _erasures(worker, account):
    answer = erasure_answer(worker, account)
    return answer["erasures"] if answer else []


def _complete(worker, account, n=1):
    done = [e for e in _erasures(worker, account) if e["state"] == "complete"]
    return done if len(done) >= n else None


def _consent(worker, subject):
    status, body = http_get(worker.url(f"/v1/subjects/{subject}/consent"), token=worker.settings.read_token)
    assert status == 200, body
    return json.loads(body)


def _query(settings, sql, params=()):
    with psycopg.connect(settings.postgres_dsn) as conn:
        return conn.execute(sql, params).fetchall()


def _outbox_empty(settings):
    return _query(settings, "SELECT count(*) FROM outbox")[0][0] == 0


def _one_browser(settings, a, b, v, *more):
    """Accounts ``a`` and ``b`` registered, both linked to visitor ``v`` by a cookie consent."""
    _emit(settings,
          event("account.registered", T0, account=a, email=f"{a}@example.test", first_name="A", last_name="A"),
          event("account.registered", T0 + 1, account=b, email=f"{b}@example.test", first_name="B", last_name="B"),
          event("consent.cookies_granted", T0 + 2, account=a, visitor=v, purposes=["necessary"],
                policy_version="2026-01"),
          event("consent.cookies_granted", T0 + 3, account=b, visitor=v, purposes=["necessary"],
                policy_version="2026-01"),
          *more)
    wait_for(lambda: len(_query(settings, "SELECT 1 FROM account_visitors")) == 2, what="both links")


def test_a_shared_browser_never_silences_the_other_account(settings, worker, connectors):
    """A and B use one browser (visitor V). A's erasure must not cover V while B is live; B's later
    consent applies, B's closure opens and completes an erasure, and then V goes too."""
    a, b, v = "acc-shared-a", "acc-shared-b", "vis-shared"
    _one_browser(settings, a, b, v, event("analytics.page_viewed", T0 + 4, visitor=v, account=b, path="/home"))
    _emit(settings, event("account.closed", T0 + HOUR, account=a, visitor=v))
    wait_for(lambda: _complete(worker, a), deadline_s=60, what="A's erasure")

    _emit(settings, event("consent.cookies_granted", T0 + 2 * HOUR, account=b, visitor=v,
                          purposes=["analytics"], policy_version="2026-01"))
    wait_for(lambda: _consent(worker, b)["purposes"].get("analytics", {}).get("granted"),
             what="B's analytics consent")
    assert metric(worker.url("/metrics"), "lifecycle_events_suppressed_total") == 0

    _emit(settings, event("account.closed", T0 + 3 * HOUR, account=b, visitor=v))
    wait_for(lambda: _complete(worker, b), deadline_s=60, what="B's erasure")
    wait_for(lambda: _outbox_empty(settings), what="the outbox to drain")
    leftovers = _query(settings, "SELECT t::text FROM account_visitors t UNION ALL "
                                 "SELECT t::text FROM consent_current t UNION ALL SELECT t::text FROM accounts t")
    assert leftovers == []
    consents = last_by_key(settings, "consents")
    assert consents[a.encode()] is None and consents[b.encode()] is None and consents[v.encode()] is None


def test_two_accounts_of_one_browser_closing_together_are_both_erased(settings, worker, connectors):
    """C and D share visitor W and close in the same batch: both erasures open in one statement per
    table, the visitor is suppressed once (a statement may not touch its row twice), both complete."""
    c, d, w = "acc-together-c", "acc-together-d", "vis-together"
    _one_browser(settings, c, d, w)
    worker.stop()  # so that the intake reads both closures in one batch when it starts again
    _emit(settings, event("account.closed", T0 + HOUR, account=c, visitor=w),
          event("account.closed", T0 + HOUR + 1, account=d, visitor=w))
    worker.start()
    wait_for(lambda: _complete(worker, c) and _complete(worker, d), deadline_s=60, what="both erasures")
    # In one batch neither account is live, so the visitor goes with both (one at a time, the first
    # closure would leave it to the live second one: what a failed batch falls back to).
    assert _query(settings, "SELECT cardinality(subject_hashes) FROM erasure_requests ORDER BY account_hash") \
        == [(2,), (2,)]
    assert _query(settings, "SELECT count(*) FROM suppressed_subjects")[0][0] == 3


def test_clock_writes_during_an_open_erasure_never_follow_the_tombstone(settings, worker):
    """No store runs, so the erasure stays open; the clock then moves 13 months on. The consent
    lapse and the idle-session close must not write the erased subject after its null tombstone."""
    c, vc, d = "acc-clock-c", "vis-clock-c", "acc-clock-d"
    _emit(settings,
          event("account.registered", T0, account=c, email="c@example.test", first_name="C", last_name="C"),
          event("consent.cookies_granted", T0 + 1, account=c, visitor=vc, purposes=["analytics"],
                policy_version="2026-01"),
          event("consent.cookies_granted", T0 + 2, visitor=vc, purposes=["preferences"], policy_version="2026-01"),
          event("session.started", T0 + MINUTE, account=c, session_id="clock-s1", ip="198.51.100.7",
                login_method="password"),
          event("consent.cookies_granted", T0 + 3, account=d, purposes=["analytics"], policy_version="2026-01"))
    wait_for(lambda: _query(settings, "SELECT count(*) FROM open_sessions")[0][0] == 1, what="the open session")
    _emit(settings, event("account.closed", T0 + 10 * MINUTE, account=c))
    wait_for(lambda: _erasures(worker, c), what="C's erasure to open")
    # 14 months on the policy clock: every grant lapses, the session is long idle.
    _emit(settings, event("session.login_failed", T0 + 14 * MONTH, account="clock-mover"))
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_consents_expired_total") >= 1,
             what="D's consent to lapse")
    time.sleep(2.5)  # two more ticks and relay rounds
    wait_for(lambda: _outbox_empty(settings), what="the outbox to drain")
    consents = last_by_key(settings, "consents")
    assert d.encode() in consents and consents[d.encode()] is not None  # the tick ran for the live one
    assert consents[c.encode()] is None and consents[vc.encode()] is None
    assert last_by_key(settings, "accounts")[c.encode()] is None
    assert [k for k, _ in records(settings, "session-logs") if k == c.encode()] == []


def test_two_workers_publish_each_key_in_commit_order(settings, tmp_path):
    """Two workers, a relay batch of 3, profile updates and closures interleaved: the last record
    of every closed account on `accounts` and `consents` is its null tombstone."""
    s = dataclasses.replace(settings, outbox_batch=3)
    workers = [WorkerProcess(dataclasses.replace(s, http_port=free_port()), tmp_path / f"worker{i}.log")
               for i in range(2)]
    try:
        for w in workers:
            w.start()
        accounts = [f"acc-order-{i:03d}" for i in range(120)]
        events = []
        for n, acc in enumerate(accounts):
            at = T0 + n * 10
            events += [event("account.registered", at, account=acc, email=f"{acc}@example.test", first_name="O",
                             last_name="R"),
                       event("consent.cookies_granted", at + 1, account=acc, purposes=["analytics"],
                             policy_version="2026-01")]
        for round_ in range(3):
            for n, acc in enumerate(accounts):
                events.append(event("account.updated", T0 + HOUR + round_ * MINUTE + n, account=acc,
                                    first_name=f"O{round_}"))
                events.append(event("consent.cookies_granted", T0 + HOUR + round_ * MINUTE + n, account=acc,
                                    purposes=["preferences"], policy_version="2026-01"))
        events += [event("account.closed", T0 + 2 * HOUR + n, account=acc) for n, acc in enumerate(accounts)]
        _emit(s, *events)
        wait_for(lambda: _query(s, "SELECT count(*) FROM erasure_requests")[0][0] == len(accounts),
                 deadline_s=90, what="every erasure to open")
        wait_for(lambda: _outbox_empty(s), deadline_s=60, what="the outbox to drain")
        profiles = last_by_key(s, "accounts")
        consents = last_by_key(s, "consents")
        alive = [a for a in accounts if profiles.get(a.encode()) is not None or consents.get(a.encode()) is not None]
        assert alive == []
    finally:
        for w in workers:
            w.stop()


def test_a_legal_hold_event_after_the_erasure_leaves_no_link(settings, worker, connectors):
    acc, vis = "acc-hold-late", "vis-hold-late"
    _emit(settings, event("account.registered", T0, account=acc, visitor=vis, email="h@example.test",
                          first_name="H", last_name="L"),
          event("account.closed", T0 + HOUR, account=acc))
    wait_for(lambda: _complete(worker, acc), deadline_s=60, what="the erasure")
    _emit(settings, event("account.legal_hold_set", T0 + 2 * HOUR, account=acc, visitor=vis),
          event("account.legal_hold_released", T0 + 3 * HOUR, account=acc, visitor=vis))
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_suppressed_total") >= 2,
             what="both hold events suppressed")
    time.sleep(1.5)
    assert _query(settings, "SELECT * FROM account_visitors") == []
    assert _query(settings, "SELECT * FROM legal_holds") == []
    assert len(_erasures(worker, acc)) == 1


def test_pseudonyms_are_keyed_and_keys_are_checked(settings, worker, connectors, tmp_path):
    """Default settings: the files store's retained billing folder is not an unkeyed SHA-256 of the
    account id. A worker given an empty key, or a key other than the one the database was set up
    with, exits at once with a clear error."""
    acc = "acc-keyed-billing"
    billing = settings.files_dir / acc / "billing"
    billing.mkdir(parents=True)
    (billing / "invoice-1.txt").write_text("invoice")
    _emit(settings, event("account.registered", T0, account=acc, email="k@example.test", first_name="K",
                          last_name="B"),
          event("account.closed", T0 + HOUR, account=acc))
    wait_for(lambda: _complete(worker, acc), deadline_s=60, what="the erasure")
    names = {p.name for p in settings.files_dir.rglob("*")}
    retained = {p.name for p in (settings.files_dir / "_retained").iterdir()}
    assert len(retained) == 1  # the billing records were pseudonymised, not erased
    assert hashlib.sha256(acc.encode()).hexdigest() not in names
    assert acc not in names

    empty = tmp_path / "empty.key"
    empty.write_text("")
    for extra, expected in (({"LIFECYCLE_HASH_KEY_FILE": str(empty)}, "empty"),
                            ({"LIFECYCLE_HASH_KEY": "a-different-key-of-enough-length"}, "fingerprint")):
        env = {**{k: v for k, v in worker.settings.to_env().items() if not k.startswith("LIFECYCLE_HASH_KEY")},
               "LIFECYCLE_HTTP_PORT": str(free_port()), **extra}
        import os

        proc = subprocess.run([sys.executable, "-m", "lifecycle", "worker"], env={**os.environ, **env},
                              capture_output=True, timeout=60)
        assert proc.returncode != 0
        assert expected in proc.stderr.decode().lower(), proc.stderr.decode()[-2000:]


def test_poison_records_on_internal_paths_block_nothing(settings, worker, connectors):
    """A session of 35,000 file transfers (its log is over a megabyte), a 1.1 MB garbage record and a
    malformed acknowledgement: later events and closures still go through."""
    big, later = "acc-poison-big", "acc-poison-later"
    transfers = [event("session.file_transferred", T0 + MINUTE + i, account=big, session_id="big-s",
                       mime_type="application/octet-stream", size_bytes=1000 + i) for i in range(35_000)]
    _emit(settings, event("session.started", T0, account=big, session_id="big-s", ip="198.51.100.8",
                login_method="password"),
          *transfers, event("session.ended", T0 + HOUR, account=big, session_id="big-s", reason="logout"))
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=4 * 1024 * 1024)
    try:
        producer.send(settings.topic("session-events"), key=b"acc-poison-garbage", value=b"\x07" * 1_100_000)
        ack = Codec().encode("ErasureAck", {"request_id": "00000000-0000-0000-0000-000000000001", "account_id": None,
                                            "store": "postgres", "status": "erased", "items_erased": -5,
                                            "completed_at": 2**62, "error": "bad\x00ack"})
        producer.send(settings.topic("erasure-acks"), key=b"acc-poison-ack", value=ack)
        producer.flush(30)
    finally:
        producer.close()
    logs = wait_for(lambda: [v for k, v in records(settings, "session-logs") if k == big.encode()], deadline_s=90,
                    what="the big session's log on its topic")
    assert len(logs) == 1
    log = Codec().decode(logs[0], topic="session-logs").value
    assert log["file_count"] == 35_000 and log["total_bytes"] == sum(1000 + i for i in range(35_000))
    _emit(settings, event("account.registered", T0 + 2 * HOUR, account=later, email="l@example.test",
                          first_name="L", last_name="P"),
          event("consent.cookies_granted", T0 + 2 * HOUR + 1, account=later, purposes=["analytics"],
                policy_version="2026-01"),
          event("account.closed", T0 + 3 * HOUR, account=later),
          event("account.closed", T0 + 3 * HOUR, account=big))
    wait_for(lambda: _complete(worker, later), deadline_s=90, what="a later closure to complete")
    wait_for(lambda: _complete(worker, big), deadline_s=90, what="the big account's closure to complete")
    letters = [Codec().decode(v, topic="dead-letters").value for _, v in records(settings, "dead-letters")]
    assert {d["stage"] for d in letters} >= {"intake", "erasure-acks"}


def test_a_write_that_raced_the_erasure_is_withheld_by_the_relay(settings, worker):
    """A writer that checked suppression before the erasure committed and queued its record after
    (the tick, a second worker): the relay withholds it, so the tombstone stays last."""
    x = "acc-raced-x"
    _emit(settings, event("account.registered", T0, account=x, email="x@example.test", first_name="X", last_name="R"),
          event("consent.cookies_granted", T0 + 1, account=x, purposes=["analytics"], policy_version="2026-01"))
    wait_for(lambda: last_by_key(settings, "consents").get(x.encode()), what="X's consent state")
    _emit(settings, event("account.closed", T0 + HOUR, account=x))
    wait_for(lambda: _erasures(worker, x), what="X's erasure to open")
    wait_for(lambda: _outbox_empty(settings), what="the outbox to drain")
    assert last_by_key(settings, "consents")[x.encode()] is None
    late = Codec().encode("ConsentState", {"subject_id": x, "purposes": [], "newsletter": False,
                                           "updated_at": T0 + 2 * HOUR})
    with psycopg.connect(settings.postgres_dsn) as conn:
        conn.execute("INSERT INTO outbox (topic, key, value) VALUES (%s, %s, %s)",
                     (settings.topic("consents"), x.encode(), late))
    wait_for(lambda: _outbox_empty(settings), what="the relay to take the raced record")
    time.sleep(0.5)
    assert last_by_key(settings, "consents")[x.encode()] is None
    assert metric(worker.url("/metrics"), "lifecycle_outbox_withheld_total", topic="consents", reason="erased") == 1


def test_writers_of_one_compacted_key_get_outbox_ids_in_commit_order(settings):
    """PipelineContext.enqueue serialises two transactions writing one key of a compacted topic: the second
    waits for the first to commit, so its outbox id is the larger one (id order = commit order)."""
    import asyncio

    from lifecycle.core.keys import Keyring
    from lifecycle.streams.runtime.context import PipelineContext
    from lifecycle.streams.runtime.database import apply_schema

    apply_schema(settings.postgres_dsn)
    ctx = PipelineContext(settings=settings, codec=None, clock=None, metrics=None,  # type: ignore[arg-type]
                  keys=Keyring((b"sixteen-byte-key-for-tests",)), policy=None,  # type: ignore[arg-type]
                  data_keys=None)  # type: ignore[arg-type]
    row = (settings.topic("consents"), b"subject-k", b"v")

    async def scenario():
        first = await psycopg.AsyncConnection.connect(settings.postgres_dsn)
        second = await psycopg.AsyncConnection.connect(settings.postgres_dsn)
        try:
            await ctx.enqueue(first, [row])  # first's transaction stays open
            waiting = asyncio.ensure_future(ctx.enqueue(second, [row]))
            await asyncio.sleep(0.5)
            blocked = not waiting.done()
            await first.commit()
            await asyncio.wait_for(waiting, 10)
            await second.commit()
            return blocked
        finally:
            await first.close()
            await second.close()

    assert asyncio.run(scenario()) is True
    ids = _query(settings, "SELECT id FROM outbox ORDER BY id")
    assert len(ids) == 2


def test_a_restored_log_gets_the_erased_subjects_tombstones_again(settings, worker, connectors):
    """A restore from a backup puts an erased account's profile back on `accounts`; once the intake
    sees the log is not the one it stood in, the rebuild tombstones that key again."""
    acc = "acc-restored"
    _emit(settings, event("account.registered", T0, account=acc, email="r@example.test", first_name="R",
                          last_name="S"))
    profile = wait_for(lambda: last_by_key(settings, "accounts").get(acc.encode()), what="the profile")
    _emit(settings, event("account.closed", T0 + HOUR, account=acc))
    wait_for(lambda: _complete(worker, acc), deadline_s=60, what="the erasure")
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    producer.send(settings.topic("accounts"), key=acc.encode(), value=profile).get(timeout=10)
    producer.close()
    assert last_by_key(settings, "accounts")[acc.encode()] is not None  # restored: readable again
    worker.stop()
    with psycopg.connect(settings.postgres_dsn) as conn:  # the restored input log differs from the one applied
        conn.execute("UPDATE intake_offsets SET last_digest = '\\x00000000000000000000000000000000'::bytea "
                     "WHERE next_offset > 0")
    worker.start()
    wait_for(lambda: last_by_key(settings, "accounts")[acc.encode()] is None, deadline_s=60,
             what="the erased account's tombstone again")
    assert json.loads(http_get(worker.url("/readyz"))[1])["log_resets"]
    assert _query(settings, "SELECT count(*) FROM accounts") == [(0,)]  # the replay re-created nothing


def test_a_rotated_key_still_matches_what_the_old_key_hashed(settings, tmp_path):
    import pytest

    from lifecycle.core.keys import KeyMismatch, open_keyring, rotate_key_file

    s = dataclasses.replace(settings, state_dir=tmp_path / "st")
    first = open_keyring(s)  # generated into the state folder, fingerprint registered
    before = first.pseudonym("acc-rotated")
    with psycopg.connect(s.postgres_dsn, autocommit=True) as conn:
        rotated = rotate_key_file(s, conn)
    ring = open_keyring(s, create=False)
    assert ring.fingerprints() == rotated.fingerprints() and ring.fingerprints()[1:] == first.fingerprints()
    assert ring.pseudonym("acc-rotated") != before and before in ring.candidates("acc-rotated")
    old_only = tmp_path / "old.key"
    old_only.write_text(first.keys[0].hex() + "\n")
    with pytest.raises(KeyMismatch):  # the database knows the new key now: the old ring alone is refused
        open_keyring(dataclasses.replace(s, hash_key_file=old_only))


def test_an_output_record_too_large_is_dead_lettered_and_blocks_nothing(settings, worker):
    """A record over the producer's limit in the outbox (a deletion order for an account linked to
    tens of thousands of visitors can be one) becomes a dead letter; the records after it go out."""
    with psycopg.connect(settings.postgres_dsn) as conn:
        conn.execute("INSERT INTO outbox (topic, key, value) VALUES (%s, %s, %s)",
                     (settings.topic("session-logs"), b"acc-huge-record", b"\x00" * 1_200_000))
    _emit(settings, event("consent.cookies_granted", T0, account="acc-after-huge", purposes=["analytics"],
                          policy_version="2026-01"))
    wait_for(lambda: last_by_key(settings, "consents").get(b"acc-after-huge"), what="a later record published")
    wait_for(lambda: _outbox_empty(settings), what="the outbox to drain")
    letters = [Codec().decode(v, topic="dead-letters").value for _, v in records(settings, "dead-letters")]
    huge = [d for d in letters if d["stage"] == "outbox"]
    assert len(huge) == 1 and huge[0]["reason"].startswith("record_too_large")
    assert huge[0]["original_topic"] == settings.topic("session-logs") and huge[0]["original_value"] is None
    assert metric(worker.url("/metrics"), "lifecycle_outbox_withheld_total", topic="session-logs",
                  reason="too_large") == 1
