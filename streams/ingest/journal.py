"""The ingest journal: an event answered 202 is in PostgreSQL before the answer, and stays there
until the intake has applied it (docs/operations.md, "What survives a crash").

HTTP ingestion writes the accepted batch here in one statement, marked as on its way, and sends it
to the broker at once; a send that fails takes the mark off. The journal relay sends what is not
marked (the broker was down) and, as a safety net, what was marked long ago and is still not applied
(the process died between its answer and its send, or the log lost it). The intake deletes entries
in the transaction that applies their batch. After a log reset (streams/ingest/loop.py) and at every
worker start, everything still in the journal is sent again: event ids make the duplicates harmless.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from lifecycle.streams.runtime.sending import SendAll

__all__ = ["journal_accept", "journal_mark_sent", "journal_unmark", "journal_forget", "journal_resend_all",
           "JournalRelay", "STALE_AFTER_S"]

STALE_AFTER_S = 60  # sent (or on its way) this long ago and not applied: send again
_BATCH = 2000
_UNSENT = """
SELECT event_id, topic, key, value FROM ingest_journal
WHERE (sent_at IS NULL AND accepted_at < now() - interval '1 second')
   OR sent_at < now() - make_interval(secs => %s)
ORDER BY accepted_at LIMIT %s FOR UPDATE SKIP LOCKED
"""


# Event ids travel as text and PostgreSQL parses them (a Python UUID each cost more than the
# insert); the forms Python's UUID accepts and PostgreSQL's does not are written canonically first.
_CANONICAL = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _ids(event_ids: Sequence[str | uuid.UUID]) -> list[str]:
    return [i if isinstance(i, str) and _CANONICAL.fullmatch(i) else str(uuid.UUID(str(i))) for i in event_ids]


async def journal_accept(conn: psycopg.AsyncConnection[Any], rows: Sequence[tuple[str, str, bytes, bytes]]) -> None:
    """Keep (event id, full topic, key, value) of every accepted event, marked as on its way (its
    sender unmarks it if the send fails); a client's retry of the same event id is kept once."""
    ids, topics, keys, values = zip(*rows, strict=True)
    await conn.execute("INSERT INTO ingest_journal (event_id, topic, key, value, sent_at) SELECT *, now() FROM "
                       "unnest(%b::text[]::uuid[], %b::text[], %b::bytea[], %b::bytea[]) ON CONFLICT DO NOTHING",
                       (_ids(ids), list(topics), list(keys), list(values)))


async def journal_mark_sent(conn: psycopg.AsyncConnection[Any], event_ids: Sequence[str | uuid.UUID]) -> None:
    await conn.execute("UPDATE ingest_journal SET sent_at = now() WHERE event_id = ANY(%b::text[]::uuid[])",
                       (_ids(event_ids),))


async def journal_unmark(conn: psycopg.AsyncConnection[Any], event_ids: Sequence[str]) -> None:
    """Not sent after all: the relay sends them within a second or two."""
    await conn.execute("UPDATE ingest_journal SET sent_at = NULL WHERE event_id = ANY(%b::text[]::uuid[])",
                       (_ids(event_ids),))


async def journal_forget(conn: psycopg.AsyncConnection[Any], event_ids: Sequence[str]) -> None:
    """In the intake's batch transaction: these events are applied (or dead-lettered)."""
    if event_ids:
        await conn.execute("DELETE FROM ingest_journal WHERE event_id = ANY(%b::text[]::uuid[])", (_ids(event_ids),))


async def journal_resend_all(conn: psycopg.AsyncConnection[Any]) -> int:
    """Mark every entry still in the journal for sending again; returns how many."""
    cur = await conn.execute("UPDATE ingest_journal SET sent_at = NULL WHERE sent_at IS NOT NULL")
    return cur.rowcount


class JournalRelay:
    """Sends what the journal holds unsent; ``once`` is one round (returns how many it sent)."""

    def __init__(self, db: Any):
        self.db = db

    async def once(self, send_all: SendAll) -> int:
        async def tx(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute(_UNSENT, (STALE_AFTER_S, _BATCH))
            rows = await cur.fetchall()
            if rows:
                await send_all([(str(event_id), topic, bytes(key), bytes(value))
                                for event_id, topic, key, value in rows])
                await journal_mark_sent(conn, [r[0] for r in rows])
            return len(rows)

        return int(await self.db.run("ingest journal relay", tx))
