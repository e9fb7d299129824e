"""The outbox relay: publishes output records queued by committed transactions.

A record is deleted from the outbox only after the broker acknowledged it, so a crash between
the two publishes it again (at-least-once; every output record is keyed and carries its own
identity, so consumers can apply it idempotently). Rows are claimed with SKIP LOCKED, so several
workers relay without publishing the same row twice at once.
"""

from __future__ import annotations

from typing import Any

import psycopg

from streams.db import Database

__all__ = ["relay_once", "RELAY_BATCH"]

RELAY_BATCH = 2000
_CLAIM = "SELECT id, topic, key, value FROM outbox ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"


async def relay_once(db: Database, producer: Any, on_published: Any = None) -> int:
    """Publish up to RELAY_BATCH queued records, in queue order; returns how many."""

    async def tx(conn: psycopg.AsyncConnection[Any]) -> int:
        cur = await conn.execute(_CLAIM, (RELAY_BATCH,))
        rows = await cur.fetchall()
        if not rows:
            return 0
        futures = [
            await producer.send(topic, key=bytes(key) if key is not None else None,
                                value=bytes(value) if value is not None else None,
                                partition=None, timestamp=None, headers=None)
            for _, topic, key, value in rows
        ]
        for fut in futures:
            await fut
        await conn.execute("DELETE FROM outbox WHERE id = ANY(%b)", ([r[0] for r in rows],))
        if on_published is not None:
            on_published([r[1] for r in rows])
        return len(rows)

    return await db.run("outbox relay", tx)
