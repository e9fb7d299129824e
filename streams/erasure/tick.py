"""The erasure's clock: re-issued orders and verifications (docs/erasure.md).

Retrying: a store that failed or is silent gets the order again with exponential backoff on the
wall clock (an operational cadence); overdue is measured on the policy clock against the deadline.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from lifecycle.core.timeutil import dt_to_ms, ms_to_dt
from lifecycle.streams.erasure.ledger import REQUEST_COLUMNS, order_for, request_of
from lifecycle.streams.runtime.context import PipelineContext

__all__ = ["erasure_tick", "reverify"]

_RETRY_MAX_S = 6 * 3600
_REVERIFY_BATCH = 500  # completed erasures verified again per tick


async def erasure_tick(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext, now_ms: int) -> None:
    """Re-issue orders to stores that failed or stayed silent, verify orders that went unanswered,
    and verify orders for completed erasures due to be checked again; refresh the gauges."""
    cur = await conn.execute(
        "WITH due AS (UPDATE erasure_progress p SET attempts = p.attempts + 1, last_issued_at = now() "
        "FROM erasure_requests r WHERE r.request_id = p.request_id AND r.state = 'open' "
        "AND p.status IN ('pending', 'failed') "
        "AND p.last_issued_at + make_interval(secs => least(%s * power(2, p.attempts - 1), %s)) <= now() "
        f"RETURNING p.request_id) SELECT {REQUEST_COLUMNS} FROM erasure_requests r "
        "WHERE r.request_id IN (SELECT request_id FROM due)", (ctx.settings.erasure_retry_s, _RETRY_MAX_S))
    orders = [order_for(ctx, request_of(row)) for row in await cur.fetchall()]
    cur = await conn.execute(
        "UPDATE erasure_requests r SET verify_attempts = r.verify_attempts + 1, verify_issued_at = now() "
        "WHERE r.state = 'open' AND r.verify_issued_at IS NOT NULL "
        "AND r.verify_issued_at + make_interval(secs => least(%s * power(2, r.verify_attempts - 1), %s)) <= now() "
        "AND EXISTS (SELECT 1 FROM erasure_progress p WHERE p.request_id = r.request_id AND p.verified_at IS NULL) "
        f"RETURNING {REQUEST_COLUMNS}", (ctx.settings.erasure_retry_s, _RETRY_MAX_S))
    verifies = [order_for(ctx, request_of(row), "verify") for row in await cur.fetchall()]
    if ctx.settings.erasure_reverify_days:
        cur = await conn.execute(
            "WITH due AS (UPDATE erasure_proofs e SET reverify_at = now() + make_interval(days => %s) "
            "WHERE e.request_id IN (SELECT request_id FROM erasure_proofs WHERE state = 'complete' "
            "AND coalesce(reverify_at, '-infinity') <= now() ORDER BY reverify_at NULLS FIRST LIMIT %s) "
            f"RETURNING e.request_id) SELECT {REQUEST_COLUMNS} FROM erasure_requests r "
            "WHERE r.request_id IN (SELECT request_id FROM due) AND r.state = 'complete'",
            (ctx.settings.erasure_reverify_days, _REVERIFY_BATCH))
        verifies += [order_for(ctx, request_of(row), "verify") for row in await cur.fetchall()]
    await ctx.enqueue(conn, orders + verifies)
    ctx.metrics.orders_reissued.inc(len(orders))
    cur = await conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE deadline < %s), min(opened_at) FROM erasure_requests "
        "WHERE state = 'open'", (ms_to_dt(now_ms),))
    pending, overdue, oldest = await cur.fetchone()  # type: ignore[misc]
    ctx.metrics.erasures_pending.set(pending)
    ctx.metrics.erasures_overdue.set(overdue)
    ctx.metrics.oldest_pending_erasure.set(dt_to_ms(oldest) / 1000 if oldest else 0)


async def reverify(conn: psycopg.AsyncConnection[Any], request_ids: list[uuid.UUID] | None) -> int:
    """Make completed erasures (all of them, or those given) due for verification at the next
    tick (`lifecycle erasure verify`). Returns how many."""
    cur = await conn.execute("UPDATE erasure_proofs SET reverify_at = now() WHERE state = 'complete' "
                             "AND (%s::uuid[] IS NULL OR request_id = ANY(%s::uuid[]))", (request_ids, request_ids))
    return cur.rowcount

