"""Republishing the state topics from PostgreSQL, after the broker's log was lost or restored.

`accounts`, `consents` and `erasure-status` are compacted: their consumers read the last record
per key as the current state. A broker that lost its log (the embedded one keeps it in memory)
has none; so once the intake detects a new log, every account's profile, every subject's consent
state and every erasure's status is queued again, a page at a time, each page in its own
transaction. A page takes its keys' locks before it reads (streams/context.py), so a concurrent
change to one of them is published after the republished state, never before it. Erased subjects
have no rows, hence no records: on a new log there is nothing of them to tombstone.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import psycopg

from streams.context import Context
from streams.db import Database
from streams.erasure import publish_status
from streams.processors.accounts import profile_records
from streams.processors.consent import publish_states

__all__ = ["republish_state", "PAGE"]

log = logging.getLogger("lifecycle.rebuild")
PAGE = 500

_PAGES = {
    "accounts": "SELECT account_id FROM accounts WHERE account_id > %s ORDER BY 1 LIMIT %s",
    "consents": "SELECT s FROM (SELECT subject_id AS s FROM consent_current UNION SELECT subject_id FROM newsletter) u "
                "WHERE s > %s ORDER BY 1 LIMIT %s",
    "erasure-status": "SELECT request_id::text FROM erasure_requests WHERE request_id::text > %s ORDER BY 1 LIMIT %s",
}


async def _page(conn: psycopg.AsyncConnection[Any], *, ctx: Context, topic: str, after: str) -> list[str]:
    cur = await conn.execute(_PAGES[topic], (after, PAGE))
    keys = [str(row[0]) for row in await cur.fetchall()]
    if not keys:
        return keys
    await ctx.lock_keys(conn, [(ctx.settings.topic(topic), k.encode()) for k in keys])
    if topic == "accounts":
        await ctx.enqueue(conn, await profile_records(conn, ctx, keys))
    elif topic == "consents":
        await publish_states(conn, keys, ctx)
    else:
        await publish_status(conn, ctx, keys)
    return keys


async def republish_state(db: Database, ctx: Context) -> dict[str, int]:
    """Queue the current state of every key of every state topic; returns counts by topic."""
    counts: dict[str, int] = {}
    for topic in _PAGES:
        after, n = "", 0
        while True:
            keys = await db.run(f"republish {topic}", functools.partial(_page, ctx=ctx, topic=topic, after=after))
            if not keys:
                break
            n += len(keys)
            after = keys[-1]
        counts[topic] = n
    log.info("state topics republished: %s", ", ".join(f"{t} {n}" for t, n in counts.items()))
    return counts
