"""A data key nobody has sealed with for longer than the log keeps a sealed value is deleted, row and
all (issue 30, streams/ingest/quietkeys.py, docs/crypto-shredding.md "How long a key lives"): a
visitor seen once no longer costs a row for ever. It is first marked retiring, and deleted once a
grace period of wall time has passed (the test ages the mark rather than wait). Kept: a key used
inside the window (created there, or an older key used again, which clears its age), an account's
profile key (the compacted `accounts` topic keeps the profile sealed under it), and a destroyed key
(what stops an erased subject's key from being made again). A subject who comes back gets a new key,
and their events are applied, not dead-lettered."""

from __future__ import annotations

import time

import psycopg

from lifecycle.core.datakeys import open_data_keys
from lifecycle.core.policy import load_policy
from lifecycle.streams.ingest.quietkeys import quiet_key_window_ms
from tests.helpers import DAY, emit, event, metric, wait_for
from tests.unit.samples import PII


def _kids(settings, subject_hash: str, category: str) -> list[str]:
    with psycopg.connect(settings.postgres_dsn) as conn:
        return [r[0] for r in conn.execute("SELECT kid FROM data_keys WHERE subject_hash = %s AND category = %s",
                                           (subject_hash, category))]


def _retiring(settings, subject_hash: str, category: str) -> list[bool]:
    with psycopg.connect(settings.postgres_dsn) as conn:
        return [r[0] for r in conn.execute("SELECT retiring_at IS NOT NULL FROM data_keys WHERE subject_hash = %s "
                                           "AND category = %s", (subject_hash, category))]


def _clock_at_least(settings, at: int) -> bool:
    with psycopg.connect(settings.postgres_dsn) as conn:
        row = conn.execute("SELECT event_time_ms FROM clock_state WHERE id = 1").fetchone()
    return row is not None and row[0] >= at


def _move_clock(settings, at: int) -> None:
    """An event of a subject of its own at ``at``, applied: the pipeline's day is then ``at``'s."""
    emit(settings, event("session.login_failed", at, account="acc-clock", failure_reason="clock"))
    wait_for(lambda: _clock_at_least(settings, at), what="the worker's clock moved")


def test_a_quiet_key_is_deleted_and_its_subject_gets_a_new_one(settings, worker):
    window = quiet_key_window_ms(load_policy(settings.retention_policy))
    keys = open_data_keys(settings, create=False)
    base = (int(time.time() * 1000) // DAY + 1) * DAY  # tomorrow: the event clock ahead of the wall clock
    visitor, recent, account = keys.hash_of("vis-quiet"), keys.hash_of("acc-recent"), keys.hash_of("acc-profile")
    back = keys.hash_of("vis-back")

    emit(settings, event("analytics.page_viewed", base, visitor="vis-quiet", path="/pricing"),
         event("analytics.page_viewed", base, visitor="vis-back", path="/pricing"),
         event("account.registered", base, account="acc-profile", email=PII["email"], first_name=PII["first_name"],
                         last_name=PII["last_name"]))
    wait_for(lambda: _clock_at_least(settings, base), what="the first events applied")
    [first_kid] = _kids(settings, visitor, "raw_analytics_events")
    [back_kid] = _kids(settings, back, "raw_analytics_events")
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:  # an erased subject's key, long quiet
        conn.execute("INSERT INTO data_keys (kid, subject_hash, category, wrapped, destroyed_at, used_on) "
                     "VALUES ('destroyed-kid-000000000', 'erased-hash', 'session_logs', NULL, now(), '2020-01-01')")

    _move_clock(settings, base + window - DAY)  # a day before the visitor's key leaves the window
    emit(settings, event("session.login_failed", base + window - DAY, account="acc-recent", failure_reason="late",
                         ip=PII["ip"]),
         event("analytics.page_viewed", base + window - DAY, visitor="vis-back", path="/back"))
    wait_for(lambda: _kids(settings, recent, "security_information"), what="the recent subject's key")
    assert _kids(settings, visitor, "raw_analytics_events") == [first_kid]

    _move_clock(settings, base + window + 2 * DAY)
    wait_for(lambda: _retiring(settings, visitor, "raw_analytics_events") == [True], what="the quiet key marked")
    assert _retiring(settings, back, "raw_analytics_events") == [False], "a key used again is not retiring"
    assert _retiring(settings, recent, "security_information") == [False]
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:  # the grace passes on the wall clock
        conn.execute("UPDATE data_keys SET retiring_at = retiring_at - interval '1 hour' WHERE retiring_at IS NOT NULL")
    wait_for(lambda: not _kids(settings, visitor, "raw_analytics_events"), what="the quiet visitor's key deleted")
    assert _kids(settings, back, "raw_analytics_events") == [back_kid], "a key used again stays, the same key"
    assert _kids(settings, recent, "security_information"), "a key used inside the window stays"
    assert _kids(settings, account, "account_profile"), "an account's profile key stays while the account exists"
    assert _kids(settings, "erased-hash", "session_logs") == ["destroyed-kid-000000000"], "a destroyed key stays"

    # The visitor comes back: a new key, and the event is applied, not dead-lettered as forged.
    letters = metric(worker.url("/metrics"), "lifecycle_dead_letters_written_total")
    comeback = base + window + 3 * DAY
    emit(settings, event("analytics.page_viewed", comeback, visitor="vis-quiet", path="/again"))
    wait_for(lambda: _clock_at_least(settings, comeback), what="the visitor's return applied")
    [second_kid] = _kids(settings, visitor, "raw_analytics_events")
    assert second_kid != first_kid
    assert metric(worker.url("/metrics"), "lifecycle_dead_letters_written_total") == letters
