"""The erasure orchestrator (CONTRACT.md section 3).

Opening: in the same transaction as the account event that closes the account, the ledger gets
the request (deadline, the stores registered now, every identifier linked to the account), the
suppression list gets keyed hashes of those identifiers, and the outbox gets one DeletionOrder
for `tombstones`, null-value tombstones for every compacted topic keyed by those identifiers,
and the first ErasureStatus. Nothing is destroyed before that commit.

Tracking: acknowledgements from `erasure-acks` update each store's progress; the request is
complete when every store registered at opening has acknowledged success (`erased`,
`nothing_found` or `retained_legal_hold`). The order names the categories to erase and those to
pseudonymise (deploy/retention.yaml, `at_closure`); under legal hold, the categories the hold
covers are in neither list and stay. Releasing the hold opens a second erasure for the rest.
Completion drops the account id from the ledger and writes the proof: keyed hash, stores, item
counts, times. No personal data.

Retrying: a store that failed or is silent gets the order again with exponential backoff on the
wall clock (an operational cadence); overdue is measured on the policy clock against the deadline.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import psycopg

from lifecycle.core.keys import Keyring
from lifecycle.core.timeutil import DAY_MS, MAX_MS, dt_to_ms, ms_to_dt
from lifecycle.schemas.statuses import SUCCESS, AckStatus
from lifecycle.schemas.validate import text_problem
from lifecycle.streams.access import forget_access
from lifecycle.streams.context import Context, Row
from lifecycle.streams.extensions import extensions_of
from lifecycle.streams.suppression import VISITOR_SUPPRESSION_MONTHS, erased_among

__all__ = ["open_erasures", "publish_status", "apply_acks", "ack_problem", "erasure_tick", "erasure_status",
           "reverify"]

_SUCCESS_SQL = ", ".join(f"'{s}'" for s in sorted(SUCCESS))  # constants of the contract, not input
_NAMESPACE = uuid.UUID("5b0f3c1e-8a4e-4a8e-9a35-6a2f3c0d9e11")
_RETRY_MAX_S = 6 * 3600
_REVERIFY_BATCH = 500  # completed erasures verified again per tick


async def open_erasures(conn: psycopg.AsyncConnection[Any], ctx: Context,
                        closures: list[tuple[str, dict[str, Any], str]]) -> int:
    """Open the erasure of each (account id, closing event, reason) that has none open; a batch
    of closures costs a fixed number of statements. Returns how many were opened."""
    keys = ctx.keys
    candidates = {account: keys.candidates(account) for account, _, _ in closures}
    # An open erasure under legal hold does not stand in for the full one its release opens.
    cur = await conn.execute("SELECT account_hash FROM erasure_requests WHERE account_hash = ANY(%s) "
                             "AND state = 'open' AND NOT legal_hold", ([h for hs in candidates.values() for h in hs],))
    already = {row[0] for row in await cur.fetchall()}
    todo, seen = [], set()
    for account, event, reason in closures:
        if not already.intersection(candidates[account]) and account not in seen:
            seen.add(account)
            todo.append((account, event, reason))
    if not todo:
        return 0
    accounts = [a for a, _, _ in todo]
    links: dict[str, list[str]] = {a: [] for a in accounts}
    cur = await conn.execute("SELECT account_id, visitor_id FROM account_visitors WHERE account_id = ANY(%s) "
                             "ORDER BY 1, 2", (accounts,))
    for account, visitor in await cur.fetchall():
        links[account].append(visitor)
    shared = await _shared_with_live_accounts(conn, ctx, accounts, sorted({v for vs in links.values() for v in vs}))
    cur = await conn.execute("SELECT store FROM erasure_stores WHERE active ORDER BY store")
    stores = [row[0] for row in await cur.fetchall()]
    cur = await conn.execute("SELECT account_id FROM legal_holds WHERE account_id = ANY(%s)", (accounts,))
    held = {row[0] for row in await cur.fetchall()}
    requests: list[tuple[Any, ...]] = []
    progress: list[tuple[uuid.UUID, str]] = []
    suppressed: list[tuple[str, uuid.UUID, bool]] = []
    rows: list[Row] = []
    request_ids: list[uuid.UUID] = []
    for account, event, reason in todo:
        request_id = uuid.uuid5(_NAMESPACE, f"{account}|{event['event_id']}")
        request_ids.append(request_id)
        visitors = [v for v in links[account] if v not in shared]
        subjects = [account, *visitors]
        opened = event["occurred_at"]
        deadline = opened + ctx.settings.erasure_deadline_days * DAY_MS
        hashes = [keys.pseudonym(s) for s in subjects]  # the account's first
        requests.append((request_id, account, hashes[0], json.dumps(subjects), json.dumps(hashes), reason,
                         account in held, ms_to_dt(opened), ms_to_dt(deadline)))
        progress.extend((request_id, store) for store in stores)
        suppressed.extend((h, request_id, i > 0) for i, h in enumerate(hashes))  # visitors' entries expire
        rows.append(_order(ctx, _Request(request_id, account, subjects, reason, opened, deadline, account in held, 0,
                                         hashes)))
        rows.append((ctx.settings.topic("accounts"), account.encode(), None))
        rows.extend((ctx.settings.topic("consents"), s.encode(), None) for s in subjects)
    await conn.execute(_OPEN_REQUESTS, _columns(requests))
    if progress:
        await conn.execute(_OPEN_PROGRESS, _columns(progress))
    # One row per subject hash (a visitor of two accounts closing together): ON CONFLICT DO UPDATE
    # refuses a statement that touches a row twice; the later closure's row wins, as in queue order.
    await conn.execute(_SUPPRESS, _columns(list({h: (h, rid, visitor) for h, rid, visitor in suppressed}.values())))
    await forget_access(conn, [h for a in accounts for h in keys.candidates(a)])  # its archive holds personal data
    await _destroy_keys(conn, ctx, [(rid, [a, *(v for v in links[a] if v not in shared)], a in held)
                                    for rid, (a, _, _) in zip(request_ids, todo, strict=True)])
    await ctx.enqueue(conn, rows)
    await publish_status(conn, ctx, request_ids)
    ctx.metrics.erasures_opened.inc(len(todo))
    return len(todo)


# One statement per table for a whole batch of closures, arrays sent in binary (the subjects' arrays
# travel as JSON text: an array of arrays does not unnest row by row).
_OPEN_REQUESTS = """
INSERT INTO erasure_requests (request_id, account_id, account_hash, subjects, subject_hashes, reason, legal_hold,
                              opened_at, deadline)
SELECT r.request_id, r.account_id, r.account_hash,
       ARRAY(SELECT e FROM jsonb_array_elements_text(r.subjects) WITH ORDINALITY AS t(e, i) ORDER BY i),
       ARRAY(SELECT e FROM jsonb_array_elements_text(r.subject_hashes) WITH ORDINALITY AS t(e, i) ORDER BY i),
       r.reason, r.legal_hold, r.opened_at, r.deadline
FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::text[]::jsonb[], %b::text[]::jsonb[], %b::text[], %b::bool[],
            %b::timestamptz[], %b::timestamptz[])
     AS r(request_id, account_id, account_hash, subjects, subject_hashes, reason, legal_hold, opened_at, deadline)
ON CONFLICT DO NOTHING
"""
_OPEN_PROGRESS = """
INSERT INTO erasure_progress (request_id, store) SELECT * FROM unnest(%b::uuid[], %b::text[]) ON CONFLICT DO NOTHING
"""
_SUPPRESS = """
INSERT INTO suppressed_subjects (subject_hash, request_id, expires_at)
SELECT h, rid, CASE WHEN visitor THEN 'infinity'::timestamptz END FROM unnest(%b::text[], %b::uuid[], %b::bool[])
     AS s(h, rid, visitor)
ON CONFLICT (subject_hash) DO UPDATE SET request_id = EXCLUDED.request_id,
    expires_at = CASE WHEN suppressed_subjects.expires_at IS NULL THEN NULL ELSE EXCLUDED.expires_at END
"""


async def _destroy_keys(conn: psycopg.AsyncConnection[Any], ctx: Context,
                        requests: list[tuple[uuid.UUID, list[str], bool]]) -> None:
    """Destroy the data keys of every subject of the requests, before any store is asked to delete:
    from this commit on, what the log holds of them is unreadable. A legal hold keeps the keys of
    the categories it covers; releasing it opens the erasure that destroys them."""
    for held in (False, True):
        batch = [(rid, subjects) for rid, subjects, h in requests if h == held]
        if not batch:
            continue
        categories = ctx.policy.erased_at_closure(held) + ctx.policy.pseudonymised_at_closure(held)
        kept = sorted(set(ctx.policy.categories) - set(categories))
        await ctx.data_keys.destroy(conn, [s for _, subjects in batch for s in subjects], categories)
        await conn.execute("UPDATE erasure_requests SET keys_destroyed_at = now(), keys_kept = %s "
                           "WHERE request_id = ANY(%s)", (kept, [rid for rid, _ in batch]))


async def _shared_with_live_accounts(conn: psycopg.AsyncConnection[Any], ctx: Context, closing: list[str],
                                     visitors: list[str]) -> set[str]:
    """Visitor ids also linked to an account that is neither closing now nor erased: the identity
    rule keeps them out of this erasure (docs/erasure.md)."""
    if not visitors:
        return set()
    cur = await conn.execute("SELECT visitor_id, account_id FROM account_visitors WHERE visitor_id = ANY(%s) "
                             "AND NOT (account_id = ANY(%s))", (visitors, closing))
    others = await cur.fetchall()
    erased = await erased_among(conn, ctx.keys, (a for _, a in others), ctx.clock.now_ms())
    return {v for v, a in others if a not in erased}


@dataclasses.dataclass(frozen=True)
class _Request:
    """What an order is built from. ``account_id`` is None once the erasure completed: the order
    then names its subjects by their keyed hashes alone."""

    request_id: uuid.UUID
    account_id: str | None
    subjects: list[str]
    reason: str
    opened_ms: int
    deadline_ms: int
    legal_hold: bool
    round: int
    subject_hashes: list[str]


# Columns of erasure_requests r that make a _Request, in order.
_REQUEST_COLUMNS = ("r.request_id, r.account_id, r.subjects, r.reason, r.opened_at, r.deadline, r.legal_hold, "
                    "r.round, coalesce(r.subject_hashes, ARRAY[r.account_hash])")


def _request(row: tuple[Any, ...]) -> _Request:
    rid, account, subjects, reason, opened, deadline, hold, round_, hashes = row
    return _Request(rid, account, list(subjects or ([account] if account else [])), reason, dt_to_ms(opened),
                    dt_to_ms(deadline), hold, round_, list(hashes))


def _order(ctx: Context, req: _Request, action: str = "erase") -> Row:
    key = req.account_id or req.subject_hashes[0]
    return ctx.record("tombstones", key, "DeletionOrder", {
        "request_id": str(req.request_id), "account_id": req.account_id or "", "reason": req.reason,
        "issued_at": req.opened_ms, "deadline": req.deadline_ms,
        "categories": ctx.policy.erased_at_closure(req.legal_hold), "legal_hold": req.legal_hold,
        "subjects": req.subjects if req.account_id else [],
        "pseudonymise": ctx.policy.pseudonymised_at_closure(req.legal_hold),
        "action": action, "round": req.round, "subject_hashes": req.subject_hashes,
        "nonce": ctx.nonce("erasure", str(req.request_id), action, req.round),
    })


async def publish_status(conn: psycopg.AsyncConnection[Any], ctx: Context, request_ids: list[Any]) -> None:
    """Queue the current ErasureStatus of each request."""
    rows = []
    for status in await _statuses(conn, "r.request_id = ANY(%s)", (list(request_ids),)):
        rows.append(ctx.record("erasure-status", status["request_id"], "ErasureStatus", {
            "request_id": status["request_id"], "account_hash": status["account_hash"], "state": status["state"],
            "opened_at": status["opened_at"], "deadline": status["deadline"], "completed_at": status["completed_at"],
            "stores": [{"store": s["store"], "status": s["status"], "items_erased": s["items_erased"],
                        "acknowledged_at": s["acknowledged_at"]} for s in status["stores"]],
        }))
    await ctx.enqueue(conn, rows)


async def _statuses(conn: psycopg.AsyncConnection[Any], where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT r.request_id, r.account_hash, r.state, r.reason, r.opened_at, r.deadline, r.completed_at, "
        "r.keys_destroyed_at, p.store, p.status, p.items_erased, p.attempts, p.acknowledged_at, p.error, "
        "p.verified_at, p.items_found "
        f"FROM erasure_requests r LEFT JOIN erasure_progress p USING (request_id) WHERE {where} "
        "ORDER BY r.opened_at, r.request_id, p.store", params)
    out: dict[str, dict[str, Any]] = {}
    for (rid, ahash, state, reason, opened, deadline, completed, destroyed, store, status, items, attempts, acked,
         error, verified, found) in await cur.fetchall():
        entry = out.setdefault(str(rid), {
            "request_id": str(rid), "account_hash": ahash, "state": state, "reason": reason,
            "opened_at": dt_to_ms(opened), "deadline": dt_to_ms(deadline),
            "completed_at": dt_to_ms(completed) if completed else None,
            "keys_destroyed_at": dt_to_ms(destroyed) if destroyed else None, "stores": []})
        if store is not None:
            entry["stores"].append({"store": store, "status": status, "items_erased": items, "attempts": attempts,
                                    "acknowledged_at": dt_to_ms(acked) if acked else None, "error": error,
                                    "verified_at": dt_to_ms(verified) if verified else None, "items_found": found})
    extensions = await extensions_of(conn, [uuid.UUID(rid) for rid in out])
    for rid, entry in out.items():
        entry["extension"] = extensions.get(rid)
    return list(out.values())


_ACK = """
UPDATE erasure_progress p
SET status = a.status, items_erased = a.items, acknowledged_at = a.at, error = a.error,
    ack_statement = a.statement, ack_signature = a.signature
FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::bigint[], %s::timestamptz[], %s::text[], %s::int[], %s::text[],
            %s::text[])
     AS a(request_id, store, status, items, at, error, round, statement, signature), erasure_requests r
WHERE p.request_id = a.request_id AND p.store = a.store AND r.request_id = p.request_id AND a.round = r.round
  AND p.status NOT IN ({success})
RETURNING p.request_id, p.store, a.status, extract(epoch FROM (now() - p.last_issued_at))
"""
# Every store acknowledged success in this round: ask them all to look again.
_ASK_VERIFY = f"""
UPDATE erasure_requests r SET verify_issued_at = now(), verify_attempts = 1
WHERE r.request_id = ANY(%s) AND r.state = 'open' AND r.verify_issued_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM erasure_progress p WHERE p.request_id = r.request_id
                  AND p.status NOT IN ({{success}}))
RETURNING {_REQUEST_COLUMNS}
"""
# A verify answer counts for a store whose success is in, in the request's current round, once
# its verify order went out (or the erasure completed: a later verification).
_VERIFIED = """
UPDATE erasure_progress p
SET verified_at = CASE WHEN a.found = 0 AND a.status IN ({success}) THEN a.at ELSE p.verified_at END,
    items_found = a.found, verify_statement = a.statement, verify_signature = a.signature
FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::bigint[], %s::timestamptz[], %s::int[], %s::text[], %s::text[])
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
    RETURNING {_REQUEST_COLUMNS}
), reset AS (
    UPDATE erasure_progress p
    SET verified_at = NULL,
        status = CASE WHEN (p.request_id, p.store) IN (SELECT request_id, store FROM found) THEN 'pending'
                 ELSE p.status END,
        attempts = 1, last_issued_at = now()
    WHERE p.request_id IN (SELECT request_id FROM found)
), regressed AS (
    -- What is found while a replay of a restored store (streams/replay.py) is under way is expected,
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
# (streams/suppression.py).
_VISITORS_LAPSE = f"""
UPDATE suppressed_subjects s SET expires_at = r.completed_at + interval '{VISITOR_SUPPRESSION_MONTHS} months'
FROM erasure_requests r
WHERE r.request_id = s.request_id AND r.request_id = ANY(%(done)s) AND s.expires_at = 'infinity'
"""
_ACK = _ACK.replace("{success}", _SUCCESS_SQL)
_ASK_VERIFY = _ASK_VERIFY.replace("{success}", _SUCCESS_SQL)
_VERIFIED = _VERIFIED.replace("{success}", _SUCCESS_SQL)
_COMPLETE = _COMPLETE.replace("{success}", _SUCCESS_SQL)
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


async def apply_acks(conn: psycopg.AsyncConnection[Any], ctx: Context, acks: list[dict[str, Any]]) -> int:
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
    await ctx.enqueue(conn, [_order(ctx, _request(row), "verify") for row in await cur.fetchall()])
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


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as columns, for one ``unnest`` of arrays per statement."""
    return [list(col) for col in zip(*rows, strict=True)]


async def _apply_erase_acks(conn: psycopg.AsyncConnection[Any], ctx: Context,
                            best: dict[tuple[uuid.UUID, str], dict[str, Any]]) -> set[uuid.UUID]:
    cur = await conn.execute(_ACK, _columns([
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


async def _apply_verify_acks(conn: psycopg.AsyncConnection[Any], ctx: Context,
                             best: dict[tuple[uuid.UUID, str], dict[str, Any]]) -> set[uuid.UUID]:
    cur = await conn.execute(_VERIFIED, _columns([
        (rid, store, ack["status"], ack.get("items_found", 0), ms_to_dt(ack["completed_at"]), ack.get("round", 0),
         *(ack.get("receipt") or (None, None))) for (rid, store), ack in best.items()]))
    rows = await cur.fetchall()
    late = await _late_findings(conn, best, {(r[0], r[1]) for r in rows})
    closed_round = {(r[0], r[1]) for r in late}
    rows += late
    # Under a replay: still complete, or already replaying (another store's finding came first).
    cur = await conn.execute("SELECT request_id FROM erasure_proofs WHERE request_id = ANY(%s) "
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
            "FROM unnest(%s::uuid[], %s::text[]) AS u(request_id, store) GROUP BY request_id) v "
            "WHERE e.request_id = v.request_id AND e.state = 'complete'", _columns(verified_complete))
    if found:
        cur = await conn.execute(_FOUND, {"rids": [r for r, _ in found], "stores": [s for _, s in found]})
        rows = await cur.fetchall()
        await ctx.enqueue(conn, [_order(ctx, _request(row[:-1])) for row in rows])
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
        "SELECT a.request_id, a.store, a.found, r.state, false FROM unnest(%s::uuid[], %s::text[], %s::bigint[], "
        "%s::int[]) AS a(request_id, store, found, round) JOIN erasure_requests r USING (request_id) "
        "JOIN erasure_progress p ON p.request_id = a.request_id AND p.store = a.store "
        f"WHERE r.state = 'open' AND a.round < r.round AND p.status IN ({_SUCCESS_SQL})", _columns(late))
    return list(await cur.fetchall())


async def erasure_tick(conn: psycopg.AsyncConnection[Any], ctx: Context, now_ms: int) -> None:
    """Re-issue orders to stores that failed or stayed silent, verify orders that went unanswered,
    and verify orders for completed erasures due to be checked again; refresh the gauges."""
    cur = await conn.execute(
        "WITH due AS (UPDATE erasure_progress p SET attempts = p.attempts + 1, last_issued_at = now() "
        "FROM erasure_requests r WHERE r.request_id = p.request_id AND r.state = 'open' "
        "AND p.status IN ('pending', 'failed') "
        "AND p.last_issued_at + make_interval(secs => least(%s * power(2, p.attempts - 1), %s)) <= now() "
        f"RETURNING p.request_id) SELECT {_REQUEST_COLUMNS} FROM erasure_requests r "
        "WHERE r.request_id IN (SELECT request_id FROM due)", (ctx.settings.erasure_retry_s, _RETRY_MAX_S))
    orders = [_order(ctx, _request(row)) for row in await cur.fetchall()]
    cur = await conn.execute(
        "UPDATE erasure_requests r SET verify_attempts = r.verify_attempts + 1, verify_issued_at = now() "
        "WHERE r.state = 'open' AND r.verify_issued_at IS NOT NULL "
        "AND r.verify_issued_at + make_interval(secs => least(%s * power(2, r.verify_attempts - 1), %s)) <= now() "
        "AND EXISTS (SELECT 1 FROM erasure_progress p WHERE p.request_id = r.request_id AND p.verified_at IS NULL) "
        f"RETURNING {_REQUEST_COLUMNS}", (ctx.settings.erasure_retry_s, _RETRY_MAX_S))
    verifies = [_order(ctx, _request(row), "verify") for row in await cur.fetchall()]
    if ctx.settings.erasure_reverify_days:
        cur = await conn.execute(
            "WITH due AS (UPDATE erasure_proofs e SET reverify_at = now() + make_interval(days => %s) "
            "WHERE e.request_id IN (SELECT request_id FROM erasure_proofs WHERE state = 'complete' "
            "AND coalesce(reverify_at, '-infinity') <= now() ORDER BY reverify_at NULLS FIRST LIMIT %s) "
            f"RETURNING e.request_id) SELECT {_REQUEST_COLUMNS} FROM erasure_requests r "
            "WHERE r.request_id IN (SELECT request_id FROM due) AND r.state = 'complete'",
            (ctx.settings.erasure_reverify_days, _REVERIFY_BATCH))
        verifies += [_order(ctx, _request(row), "verify") for row in await cur.fetchall()]
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


async def erasure_status(conn: psycopg.AsyncConnection[Any], keys: Keyring, account_id: str) -> list[dict[str, Any]]:
    """Every erasure of the account (by its keyed hash under any key of the ring), store by store;
    no personal data."""
    return await _statuses(conn, "r.account_hash = ANY(%s)", (list(keys.candidates(account_id)),))
