"""Two workers split the input partitions; when one is SIGKILLed mid-stream the other takes its
partitions over from the offsets in PostgreSQL: every event applied exactly once."""

from __future__ import annotations

import dataclasses

import psycopg

from lifecycle.connectors.emitter import Emitter
from lifecycle.embedded.process import free_port
from tests.fix_servers import WorkerProcess
from tests.helpers import T0, event, metric, wait_for

SESSIONS, FILES = 40, 30


def _count(settings, sql):
    with psycopg.connect(settings.postgres_dsn) as conn:
        return conn.execute(sql).fetchone()[0]


def _files(emitter, first, last):
    for f in range(first, last):
        for s in range(SESSIONS):
            emitter.emit(event("session.file_transferred", T0 + f * 1000, account=f"acc-w{s}", session_id=f"w{s}",
                               mime_type="text/plain", size_bytes=10 + f))
    emitter.flush()


def test_a_killed_workers_partitions_are_taken_over_exactly_once(settings, worker, tmp_path):
    second = WorkerProcess(dataclasses.replace(settings, http_port=free_port()), tmp_path / "worker-2.log")
    try:
        second.start(deadline_s=90)
        with Emitter(settings) as emitter:
            for s in range(SESSIONS):
                emitter.emit(event("session.started", T0, account=f"acc-w{s}", session_id=f"w{s}",
                                   ip="198.51.100.40", login_method="password"))
            _files(emitter, 0, FILES // 2)

            def both_busy():
                return all(metric(w.url("/metrics"), "lifecycle_events_ingested_total", topic="session-events") > 0
                           for w in (worker, second))

            wait_for(both_busy, deadline_s=60, what="both workers applying events (the partitions split)")
            second.kill()
            _files(emitter, FILES // 2, FILES)
        total = SESSIONS * (FILES + 1)
        wait_for(lambda: _count(settings, "SELECT count(*) FROM processed_events") == total, deadline_s=90,
                 what="every event applied after the takeover")
        assert _count(settings, "SELECT count(*) FROM session_files") == SESSIONS * FILES
        assert _count(settings, "SELECT count(*) FROM open_sessions") == SESSIONS
        with psycopg.connect(settings.postgres_dsn) as conn:
            stored = conn.execute("SELECT count(*), sum(next_offset) FROM intake_offsets WHERE topic = %s",
                                  (settings.topic("session-events"),)).fetchone()
        assert stored == (4, total)
    finally:
        second.stop()
