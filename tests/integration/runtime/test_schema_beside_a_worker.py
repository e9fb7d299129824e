"""A worker starting beside a busy one: its schema step must neither fail nor hold up the running
worker. schema.sql takes the exclusive lock of intake_offsets (ADD COLUMN IF NOT EXISTS) and then
waits for outbox, which a running batch holds until it stores its offsets in intake_offsets: a
deadlock, which killed the second worker's start under load (seen with two workers, one killed and
restarted). The schema now gives up a lock it cannot get within a second and tries again."""

from __future__ import annotations

import threading
import time

import psycopg

from lifecycle.streams.runtime.database import apply_schema


def test_schema_applied_beside_a_batch_that_holds_outbox_and_then_needs_intake_offsets(settings):
    dsn = settings.postgres_dsn
    apply_schema(dsn)
    batch = psycopg.connect(dsn)  # as a worker's batch: its outbox rows first, its offsets last
    outcome: list[BaseException | None] = []
    try:
        batch.execute("LOCK TABLE outbox IN ROW EXCLUSIVE MODE")

        def start_another_worker() -> None:
            try:
                apply_schema(dsn, deadline_s=30)
                outcome.append(None)
            except BaseException as exc:  # reported by the test below
                outcome.append(exc)

        starting = threading.Thread(target=start_another_worker, daemon=True)
        starting.start()
        time.sleep(0.5)  # the schema holds intake_offsets now and waits for outbox
        began = time.monotonic()
        batch.execute("LOCK TABLE intake_offsets IN ROW EXCLUSIVE MODE")
        waited = time.monotonic() - began
        batch.commit()
        starting.join(40)
        assert not starting.is_alive(), "the schema was still being applied after 40 s"
        assert outcome == [None], f"the schema failed beside a running batch: {outcome[0]!r}"
        assert waited < 3, f"the running batch waited {waited:.1f} s for the starting worker's schema"
    finally:
        batch.close()
