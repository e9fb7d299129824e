"""The ingest journal: an event answered 202 is in PostgreSQL before the answer, and stays there
until the intake has applied it (docs/operations.md, "What survives a crash").

HTTP ingestion writes the accepted batch here in one statement, then sends it to the broker at
once and marks it sent. The journal relay sends what is not marked sent (the broker was down, or
the worker died between the answer and the send) and, as a safety net, what was sent long ago and
is still not applied. The intake deletes entries in the transaction that applies their batch.
After a log reset (streams/ingest/loop.py) and at every worker start, everything still in the
journal is sent again: event ids make the duplicates harmless.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

__all__ = ["journal_accept", "journal_mark_sent", "journal_forget", "journal_resend_all", "JournalRelay",
           "STALE_AFTER_S"]

STALE_AFTER_S = 60  # sent this long ago and not applied: the log may have lost it, send again
_BATCH = 2000
_UNSENT = """
SELECT event_id, topic, key, value FROM ingest_journal
WHERE (sent_at IS NULL AND accepted_at < now() - interval '1 second')
   OR sent_at < now() - make_interval(secs => %s)
ORDER BY accepted_at LIMIT %s FOR UPDATE SKIP LOCKED
"""


async def journal_accept(conn: psycopg.AsyncConnection[Any], rows: Sequence[tuple[str, str, bytes, bytes]]) -> None:
    """Keep (event id, full topic, key, value) of every accepted event; a client's retry of the
    same event id is kept once."""
    ids, topics, keys, values = zip(*rows, strict=True)
    await conn.execute("INSERT INTO ingest_journal (event_id, topic, key, value) SELECT * FROM "
                       "unnest(%b::uuid[], %b::text[], %b::bytea[], %b::bytea[]) ON CONFLICT DO NOTHING",
                       ([uuid.UUID(i) for i in ids], list(topics), list(keys), list(values)))


async def journal_mark_sent(conn: psycopg.AsyncConnection[Any], event_ids: Sequence[str | uuid.UUID]) -> None:
    await conn.execute("UPDATE ingest_journal SET sent_at = now() WHERE event_id = ANY(%b)",
                       ([i if isinstance(i, uuid.UUID) else uuid.UUID(i) for i in event_ids],))


async def journal_forget(conn: psycopg.AsyncConnection[Any], event_ids: Sequence[str]) -> None:
    """In the intake's batch transaction: these events are applied (or dead-lettered)."""
    if event_ids:
        await conn.execute("DELETE FROM ingest_journal WHERE event_id = ANY(%b)", ([uuid.UUID(i) for i in event_ids],))


async def journal_resend_all(conn: psycopg.AsyncConnection[Any]) -> int:
    """Mark every entry still in the journal for sending again; returns how many."""
    cur = await conn.execute("UPDATE ingest_journal SET sent_at = NULL WHERE sent_at IS NOT NULL")
    return cur.rowcount


class JournalRelay:
    """Sends what the journal holds unsent; ``once`` is one round (returns how many it sent)."""

    def __init__(self, db: Any):
        self.db = db

    async def once(self, producer: Any) -> int:
        async def tx(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute(_UNSENT, (STALE_AFTER_S, _BATCH))
            rows = await cur.fetchall()
            futures = [await producer.send(topic, key=bytes(key), value=bytes(value), partition=None,
                                           timestamp=None, headers=None) for _, topic, key, value in rows]
            for fut in futures:
                await fut
            if rows:
                await journal_mark_sent(conn, [r[0] for r in rows])
            return len(rows)

        return int(await self.db.run("ingest journal relay", tx))
