"""Deduplication keeps an event's id only while the log can deliver the event again (issue 30,
streams/ingest/dedupe.py, docs/processors.md "Deduplication window"): a copy inside the window is
dropped; as the clock moves past a day, that day's partition is dropped whole and the table stays
bounded; a copy of an event whose day left the window is applied again (documented), and a late
arrival is remembered in the late partition. A database from before (the unpartitioned table, or the
day partitions keyed by the id first) keeps its ids consulted until one window has passed, then the
old table goes."""

from __future__ import annotations

import psycopg
import pytest

from lifecycle.core.policy import load_policy
from lifecycle.streams.ingest.dedupe import dedupe_window_ms
from tests.fix_servers import WorkerProcess
from tests.helpers import DAY, MINUTE, T0, emit, event, metric, wait_for


def _rows(settings, sql, *params):
    with psycopg.connect(settings.postgres_dsn) as conn:
        return conn.execute(sql, params).fetchall()


def _partitions(settings) -> list[str]:
    return sorted(r[0] for r in _rows(
        settings, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                  "WHERE i.inhparent = 'processed_events'::regclass"))


def _applied(settings, event_id: str) -> list[tuple[str]]:
    return _rows(settings, "SELECT tableoid::regclass::text FROM processed_events WHERE event_id = %s", event_id)


def _failed(at: int, reason: str) -> dict:
    return event("session.login_failed", at, account="acc-dedupe", failure_reason=reason)


def _duplicates(worker) -> float:
    return metric(worker.url("/metrics"), "lifecycle_events_duplicate_total", topic="session-events")


def test_a_copy_inside_the_window_is_dropped_and_the_table_stays_bounded(settings, worker):
    window_days = dedupe_window_ms(load_policy(settings.retention_policy)) // DAY
    original = _failed(T0, "first")
    emit(settings, original, dict(original))  # a producer's resend: the same event id
    wait_for(lambda: _duplicates(worker) == 1, what="the copy counted as a duplicate")
    assert _applied(settings, original["event_id"]) == [("processed_events_p20260115",)]

    # Every day of the window gets its partition; the clock moves past T0's day by more than the window.
    later = [_failed(T0 + d * DAY, f"day {d}") for d in range(1, window_days + 3)]
    emit(settings, *later)
    gone = wait_for(lambda: "processed_events_p20260115" not in _partitions(settings) and _partitions(settings),
                    deadline_s=60, what="T0's partition dropped once its day left the window")
    assert len(gone) <= window_days + 2, gone  # the window's days and the late partition, no more
    assert "processed_events_late" in gone and _applied(settings, original["event_id"]) == []

    # A copy of an event whose day left the window: no topic still holds such a record, so it is
    # a late arrival, applied and remembered in the late partition; a copy of it then is dropped.
    before = _duplicates(worker)
    emit(settings, dict(original))
    wait_for(lambda: _applied(settings, original["event_id"]), what="the late copy applied")
    assert _applied(settings, original["event_id"]) == [("processed_events_late",)]
    emit(settings, dict(original))
    wait_for(lambda: _duplicates(worker) == before + 1, what="the late arrival's copy dropped")


# The tables of before, as they were: the unpartitioned one that kept every id for ever, and the
# day-partitioned one keyed by the id first (before the key led with the event's time).
_BEFORE = {
    "processed_events_unbounded": [
        "CREATE TABLE processed_events (event_id uuid PRIMARY KEY, topic text NOT NULL, "
        "processed_at timestamptz NOT NULL DEFAULT now())",
        "INSERT INTO processed_events (event_id, topic) VALUES (%(id)s, 'session-events')"],
    "processed_events_v1": [
        "CREATE TABLE processed_events (event_id uuid NOT NULL, event_day date NOT NULL, topic text NOT NULL, "
        "processed_at timestamptz NOT NULL, PRIMARY KEY (event_id, event_day)) PARTITION BY RANGE (event_day)",
        "CREATE TABLE processed_events_p20260115 PARTITION OF processed_events "
        "FOR VALUES FROM ('2026-01-15') TO ('2026-01-16')",
        "CREATE TABLE processed_events_late PARTITION OF processed_events DEFAULT",
        "INSERT INTO processed_events VALUES (%(id)s, '2026-01-15', 'session-events', now())"],
}


@pytest.mark.parametrize("before", sorted(_BEFORE))
def test_ids_from_before_the_window_are_consulted_until_it_has_passed(settings, tmp_path, before):
    old_id = "4b1d2c3e-0000-4000-8000-000000000001"
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        for statement in _BEFORE[before]:
            conn.execute(statement, {"id": old_id})
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        worker.start()
        assert {t for (t,) in _rows(settings, "SELECT relname FROM pg_class WHERE relname LIKE 'processed_events%%' "
                                              "AND relkind IN ('r', 'p')")} >= {
            "processed_events", before, "processed_events_late"}
        emit(settings, {**_failed(T0, "applied before the upgrade"), "event_id": old_id})
        wait_for(lambda: _duplicates(worker) == 1, what="an id of the old table still dropped")
        assert _applied(settings, old_id) == []

        # One window past the moment the old table was set aside (wall time: it holds no event times).
        set_aside = _rows(settings, "SELECT set_aside_at FROM processed_events_before WHERE name = %s", before)[0][0]
        past = int(set_aside.timestamp() * 1000) + dedupe_window_ms(
            load_policy(settings.retention_policy)) + MINUTE
        emit(settings, _failed(past, "the window passed"))
        wait_for(lambda: not _rows(settings, "SELECT 1 FROM pg_class WHERE relname LIKE %s", before + "%"),
                 deadline_s=60, what="the old table dropped, partitions and all")
        assert not _rows(settings, "SELECT 1 FROM processed_events_before")
    finally:
        worker.stop()
