"""The erasure orchestrator (CONTRACT.md section 3).

Opening: in the same transaction as the account event that closes the account, the ledger gets
the request (deadline, the stores registered now, every identifier linked to the account), the
suppression list gets keyed hashes of those identifiers, and the outbox gets one DeletionOrder
for `tombstones`, null-value tombstones for every compacted topic keyed by those identifiers,
and the first ErasureStatus. Nothing is destroyed before that commit.

Tracking: acknowledgements from `erasure-acks` update each store's progress; the request is
complete when every store registered at opening has acknowledged success (`erased`,
`nothing_found` or `retained_legal_hold`). Completion drops the account id from the ledger and
writes the proof: keyed hash, stores, item counts, times. No personal data.

Retrying: a store that failed or is silent gets the order again with exponential backoff on the
wall clock (an operational cadence); overdue is measured on the policy clock against the deadline.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

import psycopg

from streams.context import Context, enqueue
from streams.timeutil import DAY_MS, dt_to_ms, ms_to_dt

__all__ = ["account_hash", "open_erasure", "apply_acks", "erasure_tick", "erasure_status", "SUCCESS",
           "CATEGORIES", "subject_hashes"]

SUCCESS = ("erased", "nothing_found", "retained_legal_hold")
CATEGORIES = ["account_profile", "session_logs", "security_information", "consent_history", "newsletter_audience",
              "documents_and_files", "cache", "analytics_pending"]
_NAMESPACE = uuid.UUID("5b0f3c1e-8a4e-4a8e-9a35-6a2f3c0d9e11")
_RETRY_MAX_S = 6 * 3600


def account_hash(key: bytes, account_id: str) -> str:
    """The keyed hash that stands for an account in the proof and the suppression list."""
    return hmac.new(key, account_id.encode(), hashlib.sha256).hexdigest()


def subject_hashes(key: bytes, subjects: list[str]) -> dict[str, str]:
    return {s: account_hash(key, s) for s in subjects}


async def open_erasure(conn: psycopg.AsyncConnection[Any], ctx: Context, account_id: str, event: dict[str, Any],
                       reason: str) -> bool:
    """Open the erasure of ``account_id`` unless one is already open; True if opened now."""
    cur = await conn.execute(
        "SELECT 1 FROM erasure_requests WHERE account_hash = %s AND state = 'open'",
        (account_hash(ctx.hash_key, account_id),))
    if await cur.fetchone():
        return False
    request_id = uuid.uuid5(_NAMESPACE, f"{account_id}|{event['event_id']}")
    cur = await conn.execute("SELECT visitor_id FROM account_visitors WHERE account_id = %s ORDER BY 1",
                             (account_id,))
    subjects = [account_id] + [row[0] for row in await cur.fetchall()]
    cur = await conn.execute("SELECT store FROM erasure_stores WHERE active ORDER BY store")
    stores = [row[0] for row in await cur.fetchall()]
    cur = await conn.execute("SELECT legal_hold FROM accounts WHERE account_id = %s", (account_id,))
    row = await cur.fetchone()
    legal_hold = bool(row and row[0])
    opened = event["occurred_at"]
    deadline = opened + ctx.settings.erasure_deadline_days * DAY_MS
    await conn.execute(
        "INSERT INTO erasure_requests (request_id, account_id, account_hash, subjects, reason, legal_hold, "
        "opened_at, deadline) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (request_id, account_id, account_hash(ctx.hash_key, account_id), subjects, reason, legal_hold,
         ms_to_dt(opened), ms_to_dt(deadline)))
    async with conn.cursor() as c:
        await c.executemany("INSERT INTO erasure_progress (request_id, store) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                            [(request_id, s) for s in stores])
        await c.executemany(
            "INSERT INTO suppressed_subjects (subject_hash, request_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [(h, request_id) for h in subject_hashes(ctx.hash_key, subjects).values()])
    order = _order(ctx, request_id, account_id, subjects, reason, opened, deadline, legal_hold)
    tombstones = [(ctx.settings.topic("accounts"), account_id.encode(), None)]
    tombstones += [(ctx.settings.topic("consents"), s.encode(), None) for s in subjects]
    await enqueue(conn, [order, *tombstones])
    await _publish_status(conn, ctx, [request_id])
    ctx.metrics.erasures_opened.inc()
    return True


def _order(ctx: Context, request_id: uuid.UUID, account_id: str, subjects: list[str], reason: str, opened: int,
           deadline: int, legal_hold: bool) -> tuple[str, bytes | None, bytes]:
    return ctx.record("tombstones", account_id, "DeletionOrder", {
        "request_id": str(request_id), "account_id": account_id, "reason": reason, "issued_at": opened,
        "deadline": deadline, "categories": CATEGORIES, "legal_hold": legal_hold, "subjects": subjects,
    })


async def _publish_status(conn: psycopg.AsyncConnection[Any], ctx: Context, request_ids: list[Any]) -> None:
    rows = []
    for status in await _statuses(conn, "r.request_id = ANY(%s)", (list(request_ids),)):
        rows.append(ctx.record("erasure-status", status["request_id"], "ErasureStatus", {
            "request_id": status["request_id"], "account_hash": status["account_hash"], "state": status["state"],
            "opened_at": status["opened_at"], "deadline": status["deadline"], "completed_at": status["completed_at"],
            "stores": [{"store": s["store"], "status": s["status"], "items_erased": s["items_erased"],
                        "acknowledged_at": s["acknowledged_at"]} for s in status["stores"]],
        }))
    await enqueue(conn, rows)


async def _statuses(conn: psycopg.AsyncConnection[Any], where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT r.request_id, r.account_hash, r.state, r.reason, r.opened_at, r.deadline, r.completed_at, "
        "p.store, p.status, p.items_erased, p.attempts, p.acknowledged_at, p.error "
        f"FROM erasure_requests r LEFT JOIN erasure_progress p USING (request_id) WHERE {where} "
        "ORDER BY r.opened_at, r.request_id, p.store", params)
    out: dict[str, dict[str, Any]] = {}
    for (rid, ahash, state, reason, opened, deadline, completed, store, status, items, attempts, acked,
         error) in await cur.fetchall():
        entry = out.setdefault(str(rid), {
            "request_id": str(rid), "account_hash": ahash, "state": state, "reason": reason,
            "opened_at": dt_to_ms(opened), "deadline": dt_to_ms(deadline),
            "completed_at": dt_to_ms(completed) if completed else None, "stores": []})
        if store is not None:
            entry["stores"].append({"store": store, "status": status, "items_erased": items, "attempts": attempts,
                                    "acknowledged_at": dt_to_ms(acked) if acked else None, "error": error})
    return list(out.values())


async def apply_acks(conn: psycopg.AsyncConnection[Any], ctx: Context, acks: list[dict[str, Any]]) -> int:
    """Record acknowledgements; complete the requests they finish. Returns how many completed."""
    touched = set()
    async with conn.cursor() as c:
        for ack in acks:
            try:
                request_id = uuid.UUID(ack["request_id"])
            except ValueError:
                continue
            # The first success stands (a redelivered order is acknowledged again with nothing
            # more erased); a failure never overwrites a success.
            await c.execute(
                "UPDATE erasure_progress p SET status = %(status)s, items_erased = %(items)s, "
                "acknowledged_at = %(at)s, error = %(error)s "
                "FROM erasure_requests r WHERE r.request_id = p.request_id AND p.request_id = %(rid)s "
                "AND p.store = %(store)s AND p.status NOT IN ('erased', 'nothing_found', 'retained_legal_hold') "
                "RETURNING extract(epoch FROM (now() - p.last_issued_at))",
                {"rid": request_id, "store": ack["store"], "status": ack["status"], "items": ack["items_erased"],
                 "at": ms_to_dt(ack["completed_at"]), "error": (ack.get("error") or None) and ack["error"][:200]})
            row = await c.fetchone()
            if row is not None:
                touched.add(request_id)
                store = ack["store"] if ack["store"] in ctx.settings.erasure_stores else "other"
                ctx.metrics.ack_latency.labels(store).observe(max(float(row[0]), 0.0))
                if ack["status"] == "failed":
                    ctx.metrics.store_failures.labels(store).inc()
    if not touched:
        return 0
    cur = await conn.execute(
        "SELECT r.request_id FROM erasure_requests r WHERE r.state = 'open' AND r.request_id = ANY(%s) "
        "AND NOT EXISTS (SELECT 1 FROM erasure_progress p WHERE p.request_id = r.request_id "
        "AND p.status NOT IN ('erased', 'nothing_found', 'retained_legal_hold'))", (list(touched),))
    done = [row[0] for row in await cur.fetchall()]
    now = ctx.clock.now_ms()
    for request_id in done:
        cur = await conn.execute(
            "UPDATE erasure_requests SET state = 'complete', completed_at = GREATEST(opened_at, %s), "
            "account_id = NULL, subjects = NULL WHERE request_id = %s "
            "RETURNING account_hash, reason, opened_at, completed_at", (ms_to_dt(now), request_id))
        ahash, reason, opened, completed = await cur.fetchone()  # type: ignore[misc]
        cur = await conn.execute(
            "SELECT store, status, items_erased, acknowledged_at FROM erasure_progress WHERE request_id = %s "
            "ORDER BY store", (request_id,))
        stores = [{"store": s, "status": st, "items_erased": n, "acknowledged_at": dt_to_ms(a) if a else None}
                  for s, st, n, a in await cur.fetchall()]
        await conn.execute(
            "INSERT INTO erasure_proofs (request_id, account_hash, reason, opened_at, completed_at, stores) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (request_id, ahash, reason, opened, completed, json.dumps(stores)))
        ctx.metrics.erasure_duration.observe((completed - opened).total_seconds())
    await _publish_status(conn, ctx, list(touched))
    ctx.metrics.erasures_completed.inc(len(done))
    return len(done)


async def erasure_tick(conn: psycopg.AsyncConnection[Any], ctx: Context, now_ms: int) -> None:
    """Re-issue orders to stores that failed or stayed silent; refresh the gauges."""
    cur = await conn.execute(
        "UPDATE erasure_progress p SET attempts = p.attempts + 1, last_issued_at = now() "
        "FROM erasure_requests r WHERE r.request_id = p.request_id AND r.state = 'open' "
        "AND p.status IN ('pending', 'failed') "
        "AND p.last_issued_at + make_interval(secs => least(%s * power(2, p.attempts - 1), %s)) <= now() "
        "RETURNING r.request_id, r.account_id, r.subjects, r.reason, r.opened_at, r.deadline, r.legal_hold",
        (ctx.settings.erasure_retry_s, _RETRY_MAX_S))
    due = {row[0]: row for row in await cur.fetchall()}
    orders = [_order(ctx, rid, acc, list(subjects or [acc]), reason, dt_to_ms(opened), dt_to_ms(deadline), hold)
              for rid, acc, subjects, reason, opened, deadline, hold in due.values() if acc]
    await enqueue(conn, orders)
    ctx.metrics.orders_reissued.inc(len(orders))
    cur = await conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE deadline < %s), min(opened_at) FROM erasure_requests "
        "WHERE state = 'open'", (ms_to_dt(now_ms),))
    pending, overdue, oldest = await cur.fetchone()  # type: ignore[misc]
    ctx.metrics.erasures_pending.set(pending)
    ctx.metrics.erasures_overdue.set(overdue)
    ctx.metrics.oldest_pending_erasure.set(dt_to_ms(oldest) / 1000 if oldest else 0)


async def erasure_status(conn: psycopg.AsyncConnection[Any], key: bytes, account_id: str) -> list[dict[str, Any]]:
    """Every erasure of the account (by its keyed hash), store by store; no personal data."""
    return await _statuses(conn, "r.account_hash = %s", (account_hash(key, account_id),))
