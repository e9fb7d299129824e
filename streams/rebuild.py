"""Republishing the state topics from PostgreSQL, after the broker's log was lost or restored.

`accounts`, `consents` and `erasure-status` are compacted: their consumers read the last record
per key as the current state. A broker that lost its log (the embedded one keeps it in memory)
has none; so once the intake detects a new log, every account's profile, every subject's consent
state and every erasure's status is queued again, a page at a time, each page in its own
transaction. A page takes its keys' locks before it reads (streams/runtime/context.py), so a concurrent
change to one of them is published after the republished state, never before it.

Erased subjects have no rows, hence nothing to republish. But a log restored from a backup can
hold their old records again, so every key found on `accounts` and `consents` that the suppression
list names (its keyed hash, no identifier kept) gets its null tombstone again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import psycopg

from lifecycle.streams.accounts.processor import profile_records
from lifecycle.streams.consent.processor import publish_states
from lifecycle.streams.erasure import publish_status
from lifecycle.streams.runtime.context import PipelineContext
from lifecycle.streams.runtime.database import Database
from lifecycle.streams.runtime.suppression import erased_among

__all__ = ["republish_state", "tombstone_erased", "PAGE"]

log = logging.getLogger("lifecycle.rebuild")
PAGE = 500

_PAGES = {
    "accounts": "SELECT account_id FROM accounts WHERE account_id > %s ORDER BY 1 LIMIT %s",
    "consents": "SELECT s FROM (SELECT subject_id AS s FROM consent_current UNION SELECT subject_id FROM newsletter) u "
                "WHERE s > %s ORDER BY 1 LIMIT %s",
    "erasure-status": "SELECT request_id::text FROM erasure_requests WHERE request_id::text > %s ORDER BY 1 LIMIT %s",
}


async def _page(conn: psycopg.AsyncConnection[Any], *, ctx: PipelineContext, topic: str, after: str) -> list[str]:
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


async def republish_state(db: Database, ctx: PipelineContext) -> dict[str, int]:
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


def _keys_on(ctx: PipelineContext, topics: list[str]) -> dict[str, set[bytes]]:
    """Every key on ``topics`` (full names), read to the end of each partition (blocking)."""
    from kafka import KafkaConsumer, TopicPartition

    settings = ctx.settings
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=1500, client_id="lifecycle-rebuild", **settings.kafka_client_kwargs())
    try:
        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        found: dict[str, set[bytes]] = {t: set() for t in topics}
        for msg in consumer:
            if msg.key is not None:
                found[msg.topic].add(msg.key)
        return found
    finally:
        consumer.close()


async def tombstone_erased(db: Database, ctx: PipelineContext) -> int:
    """Queue a null tombstone for every key of `accounts` and `consents` whose subject is on the
    suppression list; returns how many."""
    found = await asyncio.to_thread(_keys_on, ctx, [ctx.settings.topic("accounts"), ctx.settings.topic("consents")])
    total = 0
    for topic, keys in found.items():
        subjects = sorted(k.decode(errors="replace") for k in keys)
        for start in range(0, len(subjects), PAGE):
            page = subjects[start:start + PAGE]

            async def tx(conn: psycopg.AsyncConnection[Any], page: list[str] = page, topic: str = topic) -> int:
                erased = sorted(await erased_among(conn, ctx.keys, page, ctx.clock.now_ms()))
                await ctx.enqueue(conn, [(topic, s.encode(), None) for s in erased])
                return len(erased)

            total += await db.run(f"tombstones on {topic}", tx)
    if total:
        log.warning("%d erased subject(s) found again on the state topics (a restored log?): tombstoned", total)
    return total
