"""Account state: registered, email verified, active, processing restricted, legal hold,
closure requested, closed. The latest profile goes to the compacted `accounts` topic.

Policy: "the necessary steps to verify the email address" (marketing needs a verified address);
"ask us to stop using your information" (restricted: excluded from marketing and analytics,
data kept); "comply with our legal obligations" (legal hold).
"""

from __future__ import annotations

from typing import Any

import psycopg

from lifecycle.core.timeutil import dt_to_ms, ms_to_dt
from lifecycle.streams.erasure import open_erasures
from lifecycle.streams.runtime.context import OutboxItem
from lifecycle.streams.runtime.processor import PipelineContext

__all__ = ["AccountsProcessor", "profile_records"]

_UPSERT = """
INSERT INTO accounts (account_id, status, updated_at) VALUES (%(account_id)s, 'registered', %(at)s)
ON CONFLICT (account_id) DO NOTHING
"""
_STATEMENTS = {
    "account.registered": """
        UPDATE accounts SET email = %(email)s, first_name = %(first_name)s, last_name = %(last_name)s,
               phone = %(phone)s, registered_at = COALESCE(registered_at, %(at)s), updated_at = %(at)s,
               email_verified = CASE WHEN email IS DISTINCT FROM %(email)s THEN false ELSE email_verified END
        WHERE account_id = %(account_id)s""",
    "account.email_verified": """
        UPDATE accounts SET email_verified = true, updated_at = %(at)s,
               status = CASE WHEN status = 'registered' THEN 'active' ELSE status END
        WHERE account_id = %(account_id)s""",
    # A changed address must be verified again before any marketing mail goes to it.
    "account.updated": """
        UPDATE accounts SET
               email_verified = CASE WHEN %(email)s::text IS NOT NULL AND %(email)s IS DISTINCT FROM email
                                     THEN false ELSE email_verified END,
               email = COALESCE(%(email)s, email), first_name = COALESCE(%(first_name)s, first_name),
               last_name = COALESCE(%(last_name)s, last_name), phone = COALESCE(%(phone)s, phone),
               updated_at = %(at)s
        WHERE account_id = %(account_id)s""",
    "account.closure_requested": """
        UPDATE accounts SET status = CASE WHEN status = 'closed' THEN status ELSE 'closure_requested' END,
               closure_via = %(via)s, updated_at = %(at)s WHERE account_id = %(account_id)s""",
    "account.closed": """
        UPDATE accounts SET status = 'closed', closed_at = COALESCE(closed_at, %(at)s), updated_at = %(at)s
        WHERE account_id = %(account_id)s""",
    "account.processing_restricted": """
        UPDATE accounts SET processing_restricted = true, updated_at = %(at)s WHERE account_id = %(account_id)s""",
    "account.processing_restored": """
        UPDATE accounts SET processing_restricted = false, updated_at = %(at)s WHERE account_id = %(account_id)s""",
}
# A hold is kept apart from the account row: it outlives the account's erasure, and setting or
# releasing one must never re-create an erased account.
_HOLDS = {
    "account.legal_hold_set": """
        INSERT INTO legal_holds (account_id, set_at) VALUES (%(account_id)s, %(at)s) ON CONFLICT DO NOTHING""",
    "account.legal_hold_released": "DELETE FROM legal_holds WHERE account_id = %(account_id)s",
}
_PROFILE = """
SELECT a.account_id, a.status, a.email, a.first_name, a.last_name, a.phone, a.email_verified,
       a.processing_restricted, EXISTS (SELECT 1 FROM legal_holds h WHERE h.account_id = a.account_id),
       a.registered_at, a.updated_at, a.closed_at
FROM accounts a WHERE a.account_id = ANY(%s)
"""
# Accounts whose erasure ran under a hold and has had no full erasure since: what the hold kept
# is erased now that it is released.
_HELD_ERASURES = """
SELECT DISTINCT r.account_hash FROM erasure_requests r
WHERE r.account_hash = ANY(%s) AND r.legal_hold
  AND NOT EXISTS (SELECT 1 FROM erasure_requests n WHERE n.account_hash = r.account_hash AND NOT n.legal_hold
                  AND n.opened_at >= r.opened_at)
"""


async def profile_records(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext,
                          accounts: list[str]) -> list[OutboxItem]:
    """The current AccountProfile of each account, as outbox rows for `accounts`."""
    cur = await conn.execute(_PROFILE, (accounts,))
    rows: list[OutboxItem] = []
    for row in await cur.fetchall():
        (account_id, status, email, first, last, phone, verified, restricted, hold, reg, upd, closed) = row
        rows.append(ctx.record("accounts", account_id, "AccountProfile", {
            "account_id": account_id, "status": status, "email": email, "first_name": first,
            "last_name": last, "phone": phone, "email_verified": verified,
            "processing_restricted": restricted, "legal_hold": hold,
            "registered_at": dt_to_ms(reg) if reg else None, "updated_at": dt_to_ms(upd),
            "closed_at": dt_to_ms(closed) if closed else None,
        }))
    return rows


def _erasure_reason(event: dict[str, Any]) -> str | None:
    """Closing an account erases it; so does a closure asked of the privacy contact (the
    policy's contact for "ask us to stop using your information" and erasure requests)."""
    if event["event_type"] == "account.closed":
        return "account_closed"
    if event["event_type"] == "account.closure_requested" and event.get("via") == "privacy_contact":
        return "erasure_requested"
    return None


def _params(event: dict[str, Any]) -> dict[str, Any]:
    params = {k: event.get(k) for k in ("account_id", "email", "first_name", "last_name", "phone", "via")}
    params["at"] = ms_to_dt(event["occurred_at"])
    return params


class AccountsProcessor:
    topic = "account-events"

    async def apply(self, conn: psycopg.AsyncConnection[Any], events: list[dict[str, Any]],
                    ctx: PipelineContext) -> None:
        erasures: list[tuple[dict[str, Any], str]] = []
        releases: list[dict[str, Any]] = []
        closing: set[str] = set()
        # Pipelined: one network round trip for the batch, statements in partition order.
        async with conn.pipeline(), conn.cursor() as cur:
            for event in events:
                account = event["account_id"]
                if event["event_type"] in _HOLDS:
                    await cur.execute(_HOLDS[event["event_type"]], _params(event))
                    if event["event_type"] == "account.legal_hold_released":
                        releases.append(event)
                    continue
                if account in closing:  # after the closure in this same batch: suppressed like later ones
                    ctx.metrics.events_suppressed.labels(self.topic, event["event_type"]).inc()
                    continue
                params = _params(event)
                await cur.execute(_UPSERT, params)
                await cur.execute(_STATEMENTS[event["event_type"]], params)
                reason = _erasure_reason(event)
                if reason:
                    erasures.append((event, reason))
                    closing.add(account)
        touched = sorted({e["account_id"] for e in events if e["account_id"] not in closing})
        await ctx.enqueue(conn, await profile_records(conn, ctx, touched))
        # After the profiles: the outbox publishes in order, so the tombstone comes last.
        if erasures:
            await open_erasures(conn, ctx, [(event["account_id"], event, reason) for event, reason in erasures])
        if releases:
            await self._erase_what_holds_kept(conn, releases, ctx)

    async def _erase_what_holds_kept(self, conn: psycopg.AsyncConnection[Any], releases: list[dict[str, Any]],
                                     ctx: PipelineContext) -> None:
        by_hash = {h: e for e in releases for h in ctx.keys.candidates(e["account_id"])}
        cur = await conn.execute(_HELD_ERASURES, (list(by_hash),))
        due = [by_hash[row[0]] for row in await cur.fetchall()]
        if due:
            await open_erasures(conn, ctx, [(e["account_id"], e, "legal_hold_released") for e in due])

    async def tick(self, conn: psycopg.AsyncConnection[Any], now_ms: int, ctx: PipelineContext) -> None:
        return None
