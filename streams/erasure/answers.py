"""The stores' answers to erasure orders (docs/erasure.md).

Tracking: acknowledgements from `erasure-acks` update each store's progress; the request is
complete when every store registered at opening has acknowledged success (`erased`,
`nothing_found` or `retained_legal_hold`). The order names the categories to erase and those to
pseudonymise (deploy/retention.yaml, `at_closure`); under legal hold, the categories the hold
covers are in neither list and stay. Releasing the hold opens a second erasure for the rest.
Completion drops the account id from the ledger and writes the proof: keyed hash, stores, item
counts, times. No personal data.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from lifecycle.core.timeutil import MAX_MS, ms_to_dt
from lifecycle.schemas.statuses import SUCCESS, AckStatus
from lifecycle.schemas.validate import text_problem
from lifecycle.streams.erasure.ledger import (
    REQUEST_COLUMNS,
    SUCCESS_SQL,
    columns,
    order_for,
    publish_status,
    request_of,
)
from lifecycle.streams.runtime.context import PipelineContext
from lifecycle.streams.runtime.suppression import VISITOR_SUPPRESSION_MONTHS

__all__ = ["ack_problem", "apply_acks"]

_ACK = """
UPDATE erasure_progress p
SET status = a.status, items_erased = a.items, acknowledged_at = a.at, error = a.error,
    ack_statement = a.statement, ack_signature = a.signature
FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::bigint[], %b::timestamptz[], %b::text[], %b::int[], %b::text[],
            %b::text[])
     AS a(request_id, store, status, items, at, error, round, statement, signature), erasure_requests r
WHERE p.request_id = a.request_id AND p.store = a.store AND r.request_id = p.request_id AND a.round = r.round
  AND p.status NOT IN ({success})
RETURNING p.request_id, p.store, a.status, extract(epoch FROM (now() - p.last_issued_at))
"""
# Every store acknowledged success in this round: ask them all to look again.
_ASK_VERIFY = f"""
UPDATE erasure_requests r SET verify_issued_at = now(), verify_attempts = 1
WHERE r.request_id = ANY(%b::uuid[]) AND r.state = 'open' AND r.verify_issued_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM erasure_progress p WHERE p.request_id = r.request_id
                  AND p.status NOT IN ({{success}}))
RETURNING {REQUEST_COLUMNS}
"""
# A verify answer counts for a store whose success is in, in the request's current round, once
# its verify order went out (or the erasure completed: a later verification).
_VERIFIED = """
UPDATE erasure_progress p
SET verified_at = CASE WHEN a.found = 0 AND a.status IN ({success}) THEN a.at ELSE p.verified_at END,
    items_found = a.found, verify_statement = a.statement, verify_signature = a.signature
FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::bigint[], %b::timestamptz[], %b::int[], %b::text[], %b::text[])
     AS a(request_id, store, status, found, at, round, statement, signature), erasure_requests r
WHERE p.request_id = a.request_id AND p.store = a.store AND r.request_id = p.request_id AND a.round = r.round
  AND p.status IN ({success}) AND (r.state = 'complete' OR r.verify_issued_at IS NOT NULL)
RETURNING p.request_id, p.store, a.found, r.state, a.found = 0 AND a.status IN ({success})
"""
# Data found again: a new round. The store that found it erases again (pending); every store
# verifies again after that; a completed erasure re-opens and its proof is marked regressed.
_FOUND = f"""
WITH found AS (
    SELECT * FROM unnest(%(rids)s::uuid[], %(stores)s::text[]) AS f(request_id, store)
), bumped AS (
    UPDATE erasure_requests r SET round = r.round + 1, verify_issued_at = NULL, verify_attempts = 0,
           state = 'open', completed_at = NULL
    WHERE r.request_id IN (SELECT request_id FROM found)
    RETURNING {REQUEST_COLUMNS}
), reset AS (
    UPDATE erasure_progress p
    SET verified_at = NULL,
        status = CASE WHEN (p.request_id, p.store) IN (SELECT request_id, store FROM found) THEN 'pending'
                 ELSE p.status END,
        attempts = 1, last_issued_at = now()
    WHERE p.request_id IN (SELECT request_id FROM found)
), regressed AS (
    -- What is found while a replay of a restored store (streams/erasure/restore_guard.py) is under way is expected,
    -- on that store and on the stores it feeds (the mailing list syncs from the restored newsletter
    -- table): the proof records the replay. Anything found otherwise contradicts the proof.
    UPDATE erasure_proofs e
    SET state = CASE WHEN f.replay THEN 'replaying' ELSE 'regressed' END,
        regressed_at = CASE WHEN f.replay THEN e.regressed_at ELSE now() END,
        regressions = e.regressions + CASE WHEN f.replay THEN 0 ELSE 1 END,
        replays = e.replays + CASE WHEN f.replay THEN 1 ELSE 0 END,
        replayed_at = CASE WHEN f.replay THEN now() ELSE e.replayed_at END
    FROM (SELECT request_id, coalesce((SELECT replay_store IS NOT NULL FROM erasure_proofs x
                                       WHERE x.request_id = found.request_id), false) AS replay
          FROM found GROUP BY request_id) f
    WHERE e.request_id = f.request_id AND e.state = 'complete'
    RETURNING NOT f.replay AS regression
)
SELECT b.*, (SELECT count(*) FILTER (WHERE regression) FROM regressed) FROM bumped b
"""
_COMPLETE = """
WITH ready AS (
    SELECT r.request_id FROM erasure_requests r
    WHERE r.state = 'open' AND r.request_id = ANY(%(touched)s)
      AND NOT EXISTS (SELECT 1 FROM erasure_progress p WHERE p.request_id = r.request_id
                      AND (p.status NOT IN ({success}) OR p.verified_at IS NULL))
), done AS (
    UPDATE erasure_requests r SET state = 'complete', completed_at = GREATEST(r.opened_at, %(now)s),
           account_id = NULL, subjects = NULL
    FROM ready WHERE r.request_id = ready.request_id
    RETURNING r.request_id, r.account_hash, r.reason, r.opened_at, r.completed_at, r.keys_destroyed_at, r.keys_kept
)
INSERT INTO erasure_proofs (request_id, account_hash, reason, opened_at, completed_at, keys_destroyed_at,
                            keys_kept, stores, state, last_verified_at, reverify_at)
SELECT d.request_id, d.account_hash, d.reason, d.opened_at, d.completed_at, d.keys_destroyed_at, d.keys_kept,
       (SELECT jsonb_agg(jsonb_build_object(
                   'store', p.store, 'status', p.status, 'items_erased', p.items_erased,
                   'acknowledged_at', (extract(epoch FROM p.acknowledged_at) * 1000)::bigint,
                   'verified_at', (extract(epoch FROM p.verified_at) * 1000)::bigint,
                   'ack_statement', p.ack_statement, 'ack_signature', p.ack_signature,
                   'verify_statement', p.verify_statement, 'verify_signature', p.verify_signature,
                   'store_key', (SELECT left(encode(sha256(k.public_key), 'hex'), 16) FROM store_keys k
                                 WHERE k.store = p.store)) ORDER BY p.store)
        FROM erasure_progress p WHERE p.request_id = d.request_id),
       'complete', now(), now() + make_interval(days => %(reverify_days)s)
FROM done d
ON CONFLICT (request_id) DO UPDATE SET state = 'complete', completed_at = EXCLUDED.completed_at,
    stores = EXCLUDED.stores, last_verified_at = EXCLUDED.last_verified_at, reverify_at = EXCLUDED.reverify_at,
    replay_store = NULL
RETURNING request_id, extract(epoch FROM (completed_at - opened_at))
"""
# A visitor's entry holds while its erasure is open and lapses a cookie's lifetime after completion
# (streams/runtime/suppression.py).
_VISITORS_LAPSE = f"""
UPDATE suppressed_subjects s SET expires_at = r.completed_at + interval '{VISITOR_SUPPRESSION_MONTHS} months'
FROM erasure_requests r
WHERE r.request_id = s.request_id AND r.request_id = ANY(%(done)s) AND s.expires_at = 'infinity'
"""
_ACK = _ACK.replace("{success}", SUCCESS_SQL)
_ASK_VERIFY = _ASK_VERIFY.replace("{success}", SUCCESS_SQL)
_VERIFIED = _VERIFIED.replace("{success}", SUCCESS_SQL)
_COMPLETE = _COMPLETE.replace("{success}", SUCCESS_SQL)
_RANK = {status: 0 if status in SUCCESS else 1 for status in AckStatus}  # a success is never overwritten
_MAX_ITEMS = 2**53


def ack_problem(ack: dict[str, Any]) -> str | None:
    """Why a decoded acknowledgement cannot be applied (a field and its problem), or None. Any
    store may write to erasure-acks, so nothing in one is trusted to be in range."""
    try:
        uuid.UUID(ack["request_id"])
    except ValueError:
        return "request_id: not a UUID"
    if not 0 < len(ack["store"]) <= 64 or not ack["store"].isprintable():
        return "store: empty, too long or not printable"
    if not 0 <= ack["items_erased"] <= _MAX_ITEMS:
        return "items_erased: out of range"
    if not 0 <= ack.get("items_found", 0) <= _MAX_ITEMS:
        return "items_found: out of range"
    if not 0 <= ack.get("round", 0) < 2**31:
        return "round: out of range"
    if not 0 <= ack["completed_at"] <= MAX_MS:
        return "completed_at: out of range"
    if ack.get("error") is not None and text_problem(ack["error"]) is not None:
        return "error: not storable text"
    return None


async def apply_acks(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext, acks: list[dict[str, Any]]) -> int:
    """Record acknowledgements (each passed ``ack_problem``) and complete the requests they finish,
    set-based: a batch costs a fixed number of statements. Erase answers: the first success
    stands (a redelivered order is acknowledged again with nothing more erased); a failure never
    overwrites a success; once every store succeeded, every store is asked to verify. Verify
    answers: clean ones verify the store; one that finds data starts a new round. A request
    completes when every store succeeded and verified. Returns how many completed."""
    touched: set[uuid.UUID] = set()
    if erased := _best([a for a in acks if a.get("action", "erase") != "verify"]):
        touched |= await _apply_erase_acks(conn, ctx, erased)
    if verified := _best([a for a in acks if a.get("action") == "verify"]):
        touched |= await _apply_verify_acks(conn, ctx, verified)
    if not touched:
        return 0
    cur = await conn.execute(_ASK_VERIFY, (list(touched),))
    await ctx.enqueue(conn, [order_for(ctx, request_of(row), "verify") for row in await cur.fetchall()])
    cur = await conn.execute(_COMPLETE, {"touched": list(touched), "now": ms_to_dt(ctx.clock.now_ms()),
                                         "reverify_days": ctx.settings.erasure_reverify_days or 36500})
    done = await cur.fetchall()
    if done:
        await conn.execute(_VISITORS_LAPSE, {"done": [rid for rid, _ in done]})
    for _, seconds in done:
        ctx.metrics.erasure_duration.observe(float(seconds))
    await publish_status(conn, ctx, list(touched))
    ctx.metrics.erasures_completed.inc(len(done))
    return len(done)


def _best(acks: list[dict[str, Any]]) -> dict[tuple[uuid.UUID, str], dict[str, Any]]:
    """One ack per (request, store): the latest round, and within it a success over a failure."""
    best: dict[tuple[uuid.UUID, str], dict[str, Any]] = {}
    for ack in acks:
        key = (uuid.UUID(ack["request_id"]), ack["store"])
        old = best.get(key)
        if old is None or (ack.get("round", 0), -_RANK.get(ack["status"], 1)) > \
                (old.get("round", 0), -_RANK.get(old["status"], 1)):
            best[key] = ack
    return best





async def _apply_erase_acks(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext,
                            best: dict[tuple[uuid.UUID, str], dict[str, Any]]) -> set[uuid.UUID]:
    cur = await conn.execute(_ACK, columns([
        (rid, store, ack["status"], ack["items_erased"], ms_to_dt(ack["completed_at"]),
         (ack.get("error") or None) and ack["error"][:200].replace("\x00", ""),  # text holds no NUL
         ack.get("round", 0), *(ack.get("receipt") or (None, None))) for (rid, store), ack in best.items()]))
    touched = set()
    for rid, store, status, waited in await cur.fetchall():
        touched.add(rid)
        label = store if store in ctx.settings.erasure_stores else "other"
        ctx.metrics.ack_latency.labels(label).observe(max(float(waited), 0.0))
        if status == "failed":
            ctx.metrics.store_failures.labels(label).inc()
    return touched


async def _apply_verify_acks(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext,
                             best: dict[tuple[uuid.UUID, str], dict[str, Any]]) -> set[uuid.UUID]:
    cur = await conn.execute(_VERIFIED, columns([
        (rid, store, ack["status"], ack.get("items_found", 0), ms_to_dt(ack["completed_at"]), ack.get("round", 0),
         *(ack.get("receipt") or (None, None))) for (rid, store), ack in best.items()]))
    rows = await cur.fetchall()
    late = await _late_findings(conn, best, {(r[0], r[1]) for r in rows})
    closed_round = {(r[0], r[1]) for r in late}
    rows += late
    # Under a replay: still complete, or already replaying (another store's finding came first).
    cur = await conn.execute("SELECT request_id FROM erasure_proofs WHERE request_id = ANY(%b::uuid[]) "
                             "AND state IN ('complete', 'replaying') AND replay_store IS NOT NULL",
                             ([r[0] for r in rows],))
    replaying = {rid for (rid,) in await cur.fetchall()}
    touched: set[uuid.UUID] = set()
    found: list[tuple[uuid.UUID, str]] = []
    verified_complete: list[tuple[uuid.UUID, str]] = []
    for rid, store, items, state, verified in rows:
        touched.add(rid)
        label = store if store in ctx.settings.erasure_stores else "other"
        result = ("replayed" if rid in replaying else "found") if items else \
            "clean" if verified else "unchecked"
        ctx.metrics.verifications.labels(label, result).inc()
        if items and (rid, store) not in closed_round:
            found.append((rid, store))
        elif state == "complete" and verified:
            verified_complete.append((rid, store))
    if verified_complete:  # checked again; a replay of that store found nothing to do
        await conn.execute(
            # One row per proof: an UPDATE joined to several rows applies one of them only.
            "UPDATE erasure_proofs e SET last_verified_at = now(), replay_store = CASE WHEN e.replay_store = "
            "ANY(v.stores) THEN NULL ELSE e.replay_store END FROM (SELECT request_id, array_agg(store) AS stores "
            "FROM unnest(%b::uuid[], %b::text[]) AS u(request_id, store) GROUP BY request_id) v "
            "WHERE e.request_id = v.request_id AND e.state = 'complete'", columns(verified_complete))
    if found:
        cur = await conn.execute(_FOUND, {"rids": [r for r, _ in found], "stores": [s for _, s in found]})
        rows = await cur.fetchall()
        await ctx.enqueue(conn, [order_for(ctx, request_of(row[:-1])) for row in rows])
        ctx.metrics.regressions.inc(int(rows[0][-1]) if rows else 0)
    return touched


async def _late_findings(conn: psycopg.AsyncConnection[Any], best: dict[tuple[uuid.UUID, str], dict[str, Any]],
                         answered: set[tuple[uuid.UUID, str]]) -> list[Any]:
    """Verify answers that found data in a round another store's finding has already closed.

    The stores answer a verify order in any order; the first finding opens the next round, whose
    erase order goes to every store (each erases again under the new round's receipt) and whose
    verify order asks every store again. A finding of a closed round is counted, and opens
    nothing: opening a round for it let anyone who replayed an old signed finding keep an erasure
    open for ever (issue 26, finding 7). Rows shaped like _VERIFIED's (request, store, found,
    state, verified)."""
    late = [(rid, store, ack.get("items_found", 0), ack.get("round", 0)) for (rid, store), ack in best.items()
            if (rid, store) not in answered and ack.get("items_found", 0) > 0]
    if not late:
        return []
    cur = await conn.execute(
        "SELECT a.request_id, a.store, a.found, r.state, false FROM unnest(%b::uuid[], %b::text[], %b::bigint[], "
        "%b::int[]) AS a(request_id, store, found, round) JOIN erasure_requests r USING (request_id) "
        "JOIN erasure_progress p ON p.request_id = a.request_id AND p.store = a.store "
        f"WHERE r.state = 'open' AND a.round < r.round AND p.status IN ({SUCCESS_SQL})", columns(late))
    return list(await cur.fetchall())

