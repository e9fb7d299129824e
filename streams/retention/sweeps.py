"""The retention engine: windows of deploy/retention.yaml enforced on the policy clock.

Ordering: on every tick, for each category swept by time (event or consent time), the cutoff is
``now - window``. When it has moved by the policy's ``sweep_every`` since the last order, or the
set of accounts under legal hold has changed (a release lets everything due go at once), one
RetentionOrder goes to the compacted `retention-orders` topic, keyed by category, through the
outbox. Stores sweep through their connectors, the same ones that carry out erasures, in bounded
batches, and acknowledge on `erasure-acks` with a RetentionAck: items erased and the start time
of the oldest item they still hold. Categories that start at account closure go with the
account's erasure (streams/erasure/opening.py); categories that live only in Kafka are enforced by the
broker from the topic configs derived from the same policy (lifecycle/topics.py).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import psycopg

from lifecycle.core.policy import Policy
from lifecycle.core.timeutil import MAX_MS, dt_to_ms, ms_to_dt
from lifecycle.schemas.validate import text_problem
from lifecycle.streams.runtime.context import PipelineContext

__all__ = ["retention_tick", "apply_retention_acks", "store_label", "retention_ack_problem"]

_NAMESPACE = uuid.UUID("0f6f3b1a-5a53-4b7e-8d53-2d8c2b7e4a90")


def store_label(ctx: PipelineContext, store: str) -> str:
    """Metric labels stay bounded: stores not configured here are counted as ``other``."""
    return store if store in ctx.settings.erasure_stores else "other"


async def retention_tick(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext, policy: Policy, now_ms: int) -> int:
    """Issue the orders that are due; refresh the gauges. Returns how many orders were issued."""
    if now_ms <= 0:  # an event clock that has seen no event yet
        return 0
    cur = await conn.execute("SELECT category, cutoff, held FROM retention_orders FOR UPDATE")
    last = {cat: (dt_to_ms(cutoff), list(held)) for cat, cutoff, held in await cur.fetchall()}
    cur = await conn.execute("SELECT account_id FROM legal_holds ORDER BY account_id")
    holds = [row[0] for row in await cur.fetchall()]
    step = policy.sweep_every.approx_ms()
    rows, upserts = [], []
    for category in policy.swept():
        cutoff = category.window.cutoff(now_ms)
        held = holds if category.legal_hold else []
        previous = last.get(category.name)
        if previous is not None:
            if held == previous[1] and cutoff < previous[0] + step:
                continue
            cutoff = max(cutoff, previous[0])  # a cutoff never moves back
        digest = hashlib.sha256("\n".join(held).encode()).hexdigest()[:16]
        order_id = uuid.uuid5(_NAMESPACE, f"{category.name}|{cutoff}|{digest}")
        rows.append(ctx.record("retention-orders", category.name, "RetentionOrder", {
            "order_id": str(order_id), "category": category.name, "cutoff": cutoff, "action": category.action,
            "issued_at": now_ms, "held_accounts": held, "nonce": ctx.nonce("retention", str(order_id)),
        }))
        upserts.append((category.name, order_id, ms_to_dt(cutoff), held))
        ctx.metrics.retention_orders.labels(category.name).inc()
    if upserts:
        async with conn.cursor() as c:
            await c.executemany(
                "INSERT INTO retention_orders (category, order_id, cutoff, held) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (category) DO UPDATE SET order_id = EXCLUDED.order_id, cutoff = EXCLUDED.cutoff, "
                "held = EXCLUDED.held, issued_at = now()", upserts)
        await ctx.enqueue(conn, rows)
    await _refresh_gauges(conn, ctx)
    return len(rows)


async def _refresh_gauges(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext) -> None:
    """How far past its window the oldest item each store still holds is, against the latest
    cutoff: a store that stops sweeping shows a growing figure (alertable)."""
    cur = await conn.execute(
        "SELECT r.store, r.category, extract(epoch FROM (o.cutoff - r.oldest_remaining)), "
        "extract(epoch FROM r.acknowledged_at) FROM retention_runs r JOIN retention_orders o USING (category)")
    last_sweep: dict[str, float] = {}
    for store, category, overdue, acked in await cur.fetchall():
        label = store_label(ctx, store)
        ctx.metrics.retention_overdue.labels(category, label).set(max(float(overdue or 0), 0.0))
        last_sweep[label] = max(last_sweep.get(label, 0.0), float(acked))
    for label, at in last_sweep.items():
        ctx.metrics.retention_last_sweep.labels(label).set(at)


def retention_ack_problem(ack: dict[str, Any]) -> str | None:
    """Why a decoded RetentionAck cannot be applied (a field and its problem), or None. Any store
    may write to erasure-acks: nothing in one is trusted to be in range."""
    try:
        uuid.UUID(ack["order_id"])
    except ValueError:
        return "order_id: not a UUID"
    if not 0 < len(ack["store"]) <= 64 or not ack["store"].isprintable():
        return "store: empty, too long or not printable"
    if not 0 < len(ack["category"]) <= 64 or not ack["category"].isprintable():
        return "category: empty, too long or not printable"
    if not 0 <= ack["items_erased"] <= 2**53:
        return "items_erased: out of range"
    for name in ("cutoff", "completed_at", "oldest_remaining"):
        value = ack.get(name)
        if value is not None and not 0 <= value <= MAX_MS:
            return f"{name}: out of range"
    if ack.get("error") is not None and text_problem(ack["error"]) is not None:
        return "error: not storable text"
    return None


_RUNS = """
INSERT INTO retention_runs (store, category, order_id, cutoff, items_erased, oldest_remaining, error)
SELECT * FROM unnest(%s::text[], %s::text[], %s::uuid[], %s::timestamptz[], %s::bigint[], %s::timestamptz[],
                     %s::text[])
ON CONFLICT (store, category) DO UPDATE SET
    order_id = EXCLUDED.order_id, cutoff = EXCLUDED.cutoff, items_erased = EXCLUDED.items_erased,
    oldest_remaining = EXCLUDED.oldest_remaining, error = EXCLUDED.error, acknowledged_at = now()
WHERE retention_runs.order_id IS DISTINCT FROM EXCLUDED.order_id OR retention_runs.error IS NOT NULL
RETURNING store, category, items_erased, error
"""


async def apply_retention_acks(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext, acks: list[dict[str,
                               Any]]) -> None:
    """Record what each store's sweep did. A redelivered acknowledgement of an order already
    recorded changes nothing (the counters count each order once per store)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for ack in acks:
        try:
            uuid.UUID(ack["order_id"])
        except ValueError:
            continue
        latest[(ack["store"], ack["category"])] = ack
    if not latest:
        return
    cols: list[list[Any]] = [[], [], [], [], [], [], []]
    for (store, category), ack in latest.items():
        oldest = ack.get("oldest_remaining")
        for col, value in zip(cols, (store, category, ack["order_id"], ms_to_dt(ack["cutoff"]), ack["items_erased"],
                                     ms_to_dt(oldest) if oldest is not None else None,
                                     (ack.get("error") or None) and ack["error"][:200]), strict=True):
            col.append(value)
    cur = await conn.execute(_RUNS, cols)
    for store, category, items, error in await cur.fetchall():
        label = store_label(ctx, store)
        if error:
            ctx.metrics.retention_failures.labels(label).inc()
        elif category in ctx.policy.categories:
            ctx.metrics.retention_items_deleted.labels(category, label).inc(items)
