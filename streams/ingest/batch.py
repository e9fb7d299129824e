"""Applying a batch of decoded input events: deduplicate, apply, advance the clock, commit.

Exactly-once in effect on top of at-least-once delivery: the batch's event ids are inserted into
`processed_events` in the same transaction as the processor's writes and its outbox rows, so a
redelivered event (after a crash, a rebalance, or a resend by a producer) changes nothing, for as
long as the log can deliver it again (streams/ingest/dedupe.py).
A batch that fails for a reason that is not transient is retried event by event, and the
event that still fails goes to dead-letters (stage `process`): one bad event never blocks or
drops its neighbours.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from lifecycle.streams.ingest.dedupe import DedupeWindow
from lifecycle.streams.runtime.database import Database, describe
from lifecycle.streams.runtime.processor import PipelineContext, Processor
from lifecycle.streams.runtime.suppression import erased_among, lift_visitors, silenced

__all__ = ["apply_batch", "BatchResult"]

log = logging.getLogger("lifecycle.processing")

_CLOCK = """
INSERT INTO clock_state (id, event_time_ms) VALUES (1, %s)
ON CONFLICT (id) DO UPDATE SET event_time_ms = GREATEST(clock_state.event_time_ms, EXCLUDED.event_time_ms)
"""


# A legal hold concerns what an erasure under hold kept; releasing one is how the rest gets erased.
# So a release of a hold still in force passes suppression; every other hold event of an erased
# account is silenced like any other event, and no hold event links identifiers.
_HOLD_EVENTS = ("account.legal_hold_set", "account.legal_hold_released")


class BatchResult:
    def __init__(self) -> None:
        self.applied = 0
        self.duplicates = 0
        self.suppressed: dict[str, int] = {}  # event type -> count
        self.failed: list[tuple[int, BaseException]] = []  # (index in batch, error)
        self.same_transaction_committed = False  # the caller's `in_same_transaction` ran in the batch's


async def _suppress(conn: psycopg.AsyncConnection[Any], events: list[dict[str, Any]], ctx: PipelineContext,
                    result: BatchResult) -> list[dict[str, Any]]:
    """Drop the events the identity rule silences (streams/runtime/suppression.py)."""
    erased = await erased_among(conn, ctx.keys, (s for e in events for s in (e.get("account_id"), e.get("visitor_id"))),
                                ctx.clock.now_ms())
    if not erased:
        return events
    releases = sorted({e["account_id"] for e in events
                       if e["event_type"] == "account.legal_hold_released" and e.get("account_id") in erased})
    held: set[str] = set()
    if releases:
        cur = await conn.execute("SELECT account_id FROM legal_holds WHERE account_id = ANY(%s)", (releases,))
        held = {row[0] for row in await cur.fetchall()}
    kept = []
    for e in events:
        if silenced(e, erased) and not (e["event_type"] == "account.legal_hold_released" and e["account_id"] in held):
            result.suppressed[e["event_type"]] = result.suppressed.get(e["event_type"], 0) + 1
        else:
            kept.append(e)
    return kept


async def _link(conn: psycopg.AsyncConnection[Any], events: list[dict[str, Any]], ctx: PipelineContext) -> None:
    """Remember which visitor ids each account was seen with (what its erasure covers)."""
    links = sorted({(e["account_id"], e["visitor_id"]) for e in events
                    if e.get("account_id") and e.get("visitor_id") and e["event_type"] not in _HOLD_EVENTS})
    if not links:
        return
    async with conn.cursor() as c:
        await c.executemany("INSERT INTO account_visitors VALUES (%s, %s) ON CONFLICT DO NOTHING", links)
    await lift_visitors(conn, ctx.keys, (v for _, v in links))


async def _apply(conn: psycopg.AsyncConnection[Any], processor: Processor, events: list[dict[str, Any]],
                 ctx: PipelineContext, result: BatchResult, dedupe: DedupeWindow) -> tuple[int, int]:
    result.suppressed = {}
    events_in = events
    events = await _suppress(conn, events, ctx, result)
    await _link(conn, events, ctx)
    ids = [str(uuid.UUID(e["event_id"])) for e in events]
    new = await dedupe.new_ids(conn, processor.topic, ids, [e["occurred_at"] for e in events], ctx.clock.now_ms())
    fresh, seen = [], set()
    for event_id, event in zip(ids, events, strict=True):
        if event_id in new and event_id not in seen:
            seen.add(event_id)
            fresh.append(event)
    if fresh:
        await processor.apply(conn, fresh, ctx)
    latest = max(e["occurred_at"] for e in events_in)
    await conn.execute(_CLOCK, (latest,))
    return len(fresh), len(events) - len(fresh)


async def _apply_one(conn: psycopg.AsyncConnection[Any], *, processor: Processor, event: dict[str, Any],
                     ctx: PipelineContext, result: BatchResult, dedupe: DedupeWindow) -> tuple[int, int]:
    return await _apply(conn, processor, [event], ctx, result, dedupe)


async def apply_batch(db: Database, processor: Processor, events: list[dict[str, Any]], ctx: PipelineContext,
                      dedupe: DedupeWindow,
                      in_same_transaction: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]] | None = None,
                      ) -> BatchResult:
    """Apply ``events`` in one transaction, with ``in_same_transaction`` (the intake's offsets) in it. When the
    batch has to be retried event by event, ``in_same_transaction`` is left to the caller
    (``result.same_transaction_committed`` is false): its dead letters come first."""
    result = BatchResult()
    if not events:
        return result

    await dedupe.make_partitions(db, (e["occurred_at"] for e in events), ctx.clock.now_ms())

    async def whole(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
        counts = await _apply(conn, processor, events, ctx, result, dedupe)
        if in_same_transaction is not None:
            await in_same_transaction(conn)
        return counts

    try:
        result.applied, result.duplicates = await db.run(f"apply {processor.topic}", whole)
        result.same_transaction_committed = in_same_transaction is not None
    except Exception as exc:  # not transient (db.run retries those): isolate the bad event
        log.warning("batch on %s failed with %s; retrying event by event", processor.topic, describe(exc))
        suppressed: dict[str, int] = {}
        for index, event in enumerate(events):
            try:
                applied, dup = await db.run(f"apply {processor.topic}",
                                            functools.partial(_apply_one, processor=processor, event=event, ctx=ctx,
                                                              result=result, dedupe=dedupe))
                result.applied += applied
                result.duplicates += dup
                for kind, n in result.suppressed.items():
                    suppressed[kind] = suppressed.get(kind, 0) + n
            except Exception as single:
                log.warning("event at batch index %d on %s failed: %s", index, processor.topic, describe(single))
                result.failed.append((index, single))
        result.suppressed = suppressed
    for event in events:
        ctx.clock.observe(event["occurred_at"])
    return result
