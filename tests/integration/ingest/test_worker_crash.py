"""SIGKILL a worker mid-stream and restart it at once: no event lost, no file transfer counted
twice, and nothing even redelivered to the processors (the intake resumes from the offsets its
last transaction stored in PostgreSQL, not from Kafka's copy, which lags by up to a second)."""

from __future__ import annotations

import threading
import time

import psycopg

from lifecycle.connectors.emitter import Emitter
from tests.helpers import MINUTE, T0, event, metric, wait_for
from tests.integration.schemas.test_wire_interop import _read_all

SESSIONS, FILES = 20, 100


def _count(settings, sql):
    with psycopg.connect(settings.postgres_dsn) as conn:
        return conn.execute(sql).fetchone()[0]


def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(settings, worker):
    def produce():
        with Emitter(settings) as emitter:
            for s in range(SESSIONS):
                emitter.emit(event("session.started", T0, account=f"acc-k{s}", session_id=f"k{s}",
                                   ip="198.51.100.30", login_method="password"))
            for f in range(FILES):
                for s in range(SESSIONS):
                    emitter.emit(event("session.file_transferred", T0 + f * 1000, account=f"acc-k{s}",
                                       session_id=f"k{s}", mime_type="image/png", size_bytes=1000 + f))
                if f % 10 == 9:
                    emitter.flush()
                    time.sleep(0.1)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_ingested_total",
                                event_type="session.file_transferred") >= 300, what="mid-stream")
        worker.kill()
    finally:
        producer.join(60)
    assert not producer.is_alive()
    applied_before = _count(settings, "SELECT count(*) FROM session_files")
    assert 0 < applied_before < SESSIONS * FILES, "the kill was not mid-stream"

    worker.start()  # at once: racing the dead member's group session is part of the test
    with Emitter(settings) as emitter:
        for s in range(SESSIONS):
            emitter.emit(event("session.ended", T0 + 200 * MINUTE, account=f"acc-k{s}", session_id=f"k{s}",
                               reason="logout"))
    wait_for(lambda: _count(settings, "SELECT count(*) FROM session_logs") == SESSIONS, deadline_s=90,
             what="every session closed")
    on_topic = _read_all(settings, settings.topic("session-events"), SESSIONS * (FILES + 2))
    assert len(on_topic) == SESSIONS * (FILES + 2), "the producer lost events, not the worker"
    expected_total = sum(1000 + f for f in range(FILES))
    with psycopg.connect(settings.postgres_dsn) as conn:
        rows = conn.execute("SELECT session_id, file_count, total_bytes, jsonb_array_length(files) "
                            "FROM session_logs").fetchall()
        processed = conn.execute("SELECT count(*) FROM processed_events").fetchone()[0]
        missing = [] if processed == SESSIONS * (FILES + 2) else _missing(conn, on_topic)
        assert processed == SESSIONS * (FILES + 2), f"not processed: {missing}"
    assert {r[1:] for r in rows} == {(FILES, expected_total, FILES)}
    assert metric(worker.url("/metrics"), "lifecycle_events_duplicate_total", topic="session-events") == 0, \
        "the restarted worker re-read events its predecessor had applied"
    with psycopg.connect(settings.postgres_dsn) as conn:
        stored = conn.execute("SELECT sum(next_offset) FROM intake_offsets WHERE topic = %s",
                              (settings.topic("session-events"),)).fetchone()[0]
    assert stored == len(on_topic)


def _missing(conn, records):
    from lifecycle.schemas import Codec

    codec = Codec()
    done = {str(r[0]) for r in conn.execute("SELECT event_id FROM processed_events")}
    out = []
    for msg in records:
        value = codec.decode(msg.value).value
        if value["event_id"] not in done:
            out.append((msg.partition, msg.offset, value["event_type"]))
    return out


def test_records_fetched_while_the_intake_resumes_are_applied_once(settings, tmp_path):
    """A restarted worker's consumer may fetch from Kafka's committed offset while the intake
    still reads PostgreSQL's; a batch fetched across that seek must not be applied (a broken
    record behind it was dead-lettered twice under load). The fault hook widens the window."""
    from tests.fix_servers import WorkerProcess

    first = WorkerProcess(settings, tmp_path / "worker-1.log")
    first.start()
    try:
        with Emitter(settings) as emitter:
            emitter.emit(event("session.login_failed", T0, account="acc-resume", ip="198.51.100.31"))
        wait_for(lambda: _count(settings, "SELECT count(*) FROM failed_logins") == 1, what="the first event")
        wait_for(lambda: _committed(settings) >= 1, what="Kafka's copy of the offset")
    finally:
        first.stop()
    with Emitter(settings) as emitter:  # while no worker runs: behind both stored offsets
        emitter.send_raw(settings.topic("session-events"), b"acc-resume", b"not avro at all")
        emitter.emit(event("session.login_failed", T0 + MINUTE, account="acc-resume", ip="198.51.100.31"))
    second = WorkerProcess(settings, tmp_path / "worker-2.log")
    second.extra_env["LIFECYCLE_FAULT_RESUME_DELAY_S"] = "3"
    second.start()
    try:
        wait_for(lambda: _count(settings, "SELECT count(*) FROM failed_logins") == 2, what="the second event")
        time.sleep(2)  # a second read of the same records would have happened by now
        url = second.url("/metrics")
        assert metric(url, "lifecycle_dead_letters_written_total", topic="session-events") == 1
        assert metric(url, "lifecycle_events_duplicate_total", topic="session-events") == 0
    finally:
        second.stop()


def _committed(settings):
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.app_id,
                             enable_auto_commit=False)
    try:
        return sum(consumer.committed(TopicPartition(settings.topic("session-events"), p)) or 0 for p in range(4))
    finally:
        consumer.close()
