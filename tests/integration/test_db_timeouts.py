"""Statements and locks have deadlines (issue 18): a statement past its timeout is cancelled and
raised (its batch is then retried event by event and the event dead-lettered: never retried for
ever); a lock not granted in time is given up and tried again, and goes through once it is free."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from lifecycle.streams.db import Database, connect, is_transient


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
