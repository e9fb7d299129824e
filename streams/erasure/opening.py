"""Opening erasures (docs/erasure.md).

Opening: in the same transaction as the account event that closes the account, the ledger gets
the request (deadline, the stores registered now, every identifier linked to the account), the
suppression list gets keyed hashes of those identifiers, and the outbox gets one DeletionOrder
for `tombstones`, null-value tombstones for every compacted topic keyed by those identifiers,
and the first ErasureStatus. Nothing is destroyed before that commit.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from lifecycle.core.timeutil import DAY_MS, ms_to_dt
from lifecycle.streams.access import forget_access
from lifecycle.streams.erasure.ledger import Request, columns, order_for, publish_status
from lifecycle.streams.runtime.context import OutboxItem, PipelineContext
from lifecycle.streams.runtime.suppression import erased_among

__all__ = ["open_erasures"]

_NAMESPACE = uuid.UUID("5b0f3c1e-8a4e-4a8e-9a35-6a2f3c0d9e11")


async def open_erasures(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext,
                        closures: list[tuple[str, dict[str, Any], str]]) -> int:
    """Open the erasure of each (account id, closing event, reason) that has none open; a batch
    of closures costs a fixed number of statements. Returns how many were opened."""
    keys = ctx.keys
    candidates = {account: keys.candidates(account) for account, _, _ in closures}
    # An open erasure under legal hold does not stand in for the full one its release opens.
    cur = await conn.execute("SELECT account_hash FROM erasure_requests WHERE account_hash = ANY(%b::text[]) "
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
    cur = await conn.execute("SELECT account_id, visitor_id FROM account_visitors WHERE account_id = ANY(%b::text[]) "
                             "ORDER BY 1, 2", (accounts,))
    for account, visitor in await cur.fetchall():
        links[account].append(visitor)
    shared = await _shared_with_live_accounts(conn, ctx, accounts, sorted({v for vs in links.values() for v in vs}))
    cur = await conn.execute("SELECT store FROM erasure_stores WHERE active ORDER BY store")
    stores = [row[0] for row in await cur.fetchall()]
    cur = await conn.execute("SELECT account_id FROM legal_holds WHERE account_id = ANY(%b::text[])", (accounts,))
    held = {row[0] for row in await cur.fetchall()}
    requests: list[tuple[Any, ...]] = []
    progress: list[tuple[uuid.UUID, str]] = []
    suppressed: list[tuple[str, uuid.UUID, bool]] = []
    rows: list[OutboxItem] = []
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
        rows.append(order_for(ctx, Request(request_id, account, subjects, reason, opened, deadline, account in held, 0,
                                         hashes)))
        rows.append((ctx.settings.topic("accounts"), account.encode(), None))
        rows.extend((ctx.settings.topic("consents"), s.encode(), None) for s in subjects)
    await conn.execute(_OPEN_REQUESTS, columns(requests))
    if progress:
        await conn.execute(_OPEN_PROGRESS, columns(progress))
    # One row per subject hash (a visitor of two accounts closing together): ON CONFLICT DO UPDATE
    # refuses a statement that touches a row twice; the later closure's row wins, as in queue order.
    await conn.execute(_SUPPRESS, columns(list({h: (h, rid, visitor) for h, rid, visitor in suppressed}.values())))
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


async def _destroy_keys(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext,
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
        await conn.execute("UPDATE erasure_requests SET keys_destroyed_at = now(), keys_kept = %b::text[] "
                           "WHERE request_id = ANY(%b::uuid[])", (kept, [rid for rid, _ in batch]))


async def _shared_with_live_accounts(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext, closing: list[str],
                                     visitors: list[str]) -> set[str]:
    """Visitor ids also linked to an account that is neither closing now nor erased: the identity
    rule keeps them out of this erasure (docs/erasure.md)."""
    if not visitors:
        return set()
    cur = await conn.execute("SELECT visitor_id, account_id FROM account_visitors WHERE visitor_id = ANY(%b::text[]) "
                             "AND NOT (account_id = ANY(%b::text[]))", (visitors, closing))
    others = await cur.fetchall()
    erased = await erased_among(conn, ctx.keys, (a for _, a in others), ctx.clock.now_ms())
    return {v for v, a in others if a not in erased}

