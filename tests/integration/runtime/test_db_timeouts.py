"""Statements and locks have deadlines (issue 18): a statement past its timeout is cancelled and
raised (its batch is then retried event by event and the event dead-lettered: never retried for
ever); a lock not granted in time is given up and tried again, and goes through once it is free."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from lifecycle.streams.runtime.database import Database, connect, is_transient


def test_a_statement_past_its_timeout_is_cancelled_and_not_retried(settings):
    async def scenario():
        db = Database(settings.postgres_dsn, statement_timeout_ms=300)
        started = time.monotonic()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled) as raised:
                await db.run("slow", lambda conn: conn.execute("SELECT pg_sleep(5)"))
        finally:
            if db.conn is not None:
                await db.conn.close()
        assert time.monotonic() - started < 3 and not is_transient(raised.value)

    asyncio.run(scenario())


def test_a_lock_not_granted_in_time_is_tried_again(settings):
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE held (id int PRIMARY KEY)")
        setup.execute("INSERT INTO held VALUES (1)")
    holder = psycopg.connect(settings.postgres_dsn)
    holder.execute("UPDATE held SET id = 1")  # holds the row lock until it commits
    release = threading.Timer(2.5, holder.commit)
    release.start()

    async def scenario():
        db = Database(settings.postgres_dsn)
        db.conn = await connect(settings.postgres_dsn, lock_timeout_ms=500)
        started = time.monotonic()
        try:
            await db.run("locked", lambda c: c.execute("UPDATE held SET id = 1"))
        finally:
            await db.conn.close()
        return time.monotonic() - started

    try:
        waited = asyncio.run(scenario())
        assert 2 < waited < 15  # lock_timeout (55P03) retried with backoff until the holder let go
    finally:
        release.cancel()
        release.join()  # the holder's commit may still be reading its answer: close only after it
        holder.close()


def test_tasks_sharing_one_database_take_turns_and_a_nested_call_joins_its_transaction(settings):
    """Seen in a cold worker: the intake resuming its offsets while a batch opened data keys on the
    same connection crashed it (OutOfOrderTransactionNesting)."""
    async def scenario():
        db = Database(settings.postgres_dsn)

        async def slow(conn):
            await conn.execute("SELECT pg_sleep(0.2)")
            return await db.run("nested", lambda c: c.execute("SELECT 1"))  # the same task: a savepoint

        try:
            await asyncio.gather(*(db.run(f"task {i}", slow) for i in range(4)))
        finally:
            if db.conn is not None:
                await db.conn.close()

    asyncio.run(scenario())


def test_plans_follow_a_table_that_grew_within_one_connection(settings):
    """A plan cached while erasure_requests was small must not outlive its growth: the foreign-key
    check of every erasure_progress row seq-scanned the table it cached the plan on, so a burst of
    closures after a quiet start went quadratic (issue 15: 4,000 closures opened in 12 s instead of
    0.3 s). The worker's connections plan each statement for the tables as they are now."""
    import uuid

    from lifecycle.streams.runtime.database import apply_schema

    apply_schema(settings.postgres_dsn)

    async def scenario() -> int:
        conn = await connect(settings.postgres_dsn)

        async def open_requests(n: int) -> list[uuid.UUID]:
            ids = [uuid.uuid4() for _ in range(n)]
            await conn.execute(
                "INSERT INTO erasure_requests (request_id, account_hash, reason, opened_at, deadline) "
                "SELECT id, id::text, 'account_closed', now(), now() FROM unnest(%s::uuid[]) AS id", (ids,))
            await conn.execute("INSERT INTO erasure_progress (request_id, store) "
                               "SELECT id, 'files' FROM unnest(%s::uuid[]) AS id", (ids,))
            return ids

        try:
            await open_requests(50)
            await conn.commit()
            await conn.execute("ANALYZE erasure_requests")
            await conn.commit()
            for _ in range(8):  # the foreign-key check's plan is cached, for a table of 50 rows
                await open_requests(1)
                await conn.commit()
            await open_requests(2000)
            cur = await conn.execute("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'erasure_requests'")
            row = await cur.fetchone()
            await conn.rollback()
            return int(row[0]) if row else 0
        finally:
            await conn.close()

    assert asyncio.run(scenario()) < 10  # one scan of the table per row checked was 2,000
