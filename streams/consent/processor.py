"""Consent: "In order for a cookie to be placed on your computer, you must give us your consent
... The lifetime of cookies is 13 months from the consent of the Users" and "You may unsubscribe
at any time from promotional emails, but you still continue to receive communications such as
notifications, confirmation emails, and customer service updates" (policy, COOKIES and PERSONAL
INFORMATION).

Every consent event is kept in `consent_history` (the proof: who, what, which policy version,
when, from where). The current state per subject and purpose lives in `consent_current`; a grant
lapses 13 calendar months after it was given, on event time. The tick, driven by the clock,
marks lapsed grants expired and emits `ConsentExpired` followed by the new `ConsentState` on the
compacted `consents` topic (the state last, so compaction keeps it).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from lifecycle.core.timeutil import add_months, dt_to_ms, ms_to_dt
from lifecycle.streams.runtime.context import OutboxItem
from lifecycle.streams.runtime.processor import PipelineContext
from lifecycle.streams.runtime.suppression import erased_among

__all__ = ["ConsentProcessor", "COOKIE_LIFETIME_MONTHS", "consent_state", "publish_states"]

COOKIE_LIFETIME_MONTHS = 13

_HISTORY = """
INSERT INTO consent_history (event_id, subject_id, event_type, purposes, policy_version, occurred_at, source,
                             notice_hash)
VALUES (%(event_id)s, %(subject)s, %(event_type)s, %(purposes)s, %(policy_version)s, %(at)s, %(source)s,
        %(notice_hash)s)
ON CONFLICT (event_id) DO NOTHING
"""
# Event time decides: an older decision arriving late never overrides a newer one.
_DECIDE = """
INSERT INTO consent_current (subject_id, purpose, granted, given_at, expires_at, policy_version, expired_at,
                             notice_hash, decided_by)
VALUES (%(subject)s, %(purpose)s, %(granted)s, %(at)s, %(expires)s, %(policy_version)s, NULL, %(notice_hash)s,
        'choice')
ON CONFLICT (subject_id, purpose) DO UPDATE SET
    granted = EXCLUDED.granted, given_at = EXCLUDED.given_at, expires_at = EXCLUDED.expires_at,
    policy_version = EXCLUDED.policy_version, expired_at = NULL, notice_hash = EXCLUDED.notice_hash,
    decided_by = 'choice'
WHERE consent_current.given_at <= EXCLUDED.given_at
"""
# Global Privacy Control: an opt-out of `advertising` (sale, sharing, targeted advertising), the
# table of cases in docs/processors.md. Three steps per subject, in order: no decision yet, refused
# by the signal; a grant made before the browser's signal was first seen, withdrawn (one made after
# it is an informed choice, CCPA regulations 11 CCR 7025(c)(3), and stands; an older signal
# arriving late changes nothing); then remember since when the signal has been seen.
GPC_PURPOSE = "advertising"
_GPC_REFUSE = """
INSERT INTO consent_current (subject_id, purpose, granted, given_at, decided_by, gpc_since)
VALUES (%(subject)s, 'advertising', false, %(at)s, 'gpc', %(at)s)
ON CONFLICT (subject_id, purpose) DO NOTHING RETURNING subject_id
"""
_GPC_WITHDRAW = """
UPDATE consent_current SET granted = false, given_at = %(at)s, expires_at = NULL, expired_at = NULL,
                           notice_hash = NULL, decided_by = 'gpc'
WHERE subject_id = %(subject)s AND purpose = 'advertising' AND granted AND given_at <= %(at)s
  AND NOT (gpc_since IS NOT NULL AND given_at >= gpc_since)
RETURNING subject_id
"""
_GPC_SEEN = """
UPDATE consent_current SET gpc_since = LEAST(COALESCE(gpc_since, %(at)s), %(at)s)
WHERE subject_id = %(subject)s AND purpose = 'advertising'
"""
_LINKED = "SELECT visitor_id, account_id FROM account_visitors WHERE visitor_id = ANY(%s)"
_NEWSLETTER = """
INSERT INTO newsletter (subject_id, subscribed, email, updated_at, policy_version, notice_hash)
VALUES (%(subject)s, %(subscribed)s, %(email)s, %(at)s, %(policy_version)s, %(notice_hash)s)
ON CONFLICT (subject_id) DO UPDATE SET
    subscribed = EXCLUDED.subscribed, email = COALESCE(EXCLUDED.email, newsletter.email),
    updated_at = EXCLUDED.updated_at, policy_version = EXCLUDED.policy_version, notice_hash = EXCLUDED.notice_hash
WHERE newsletter.updated_at <= EXCLUDED.updated_at
"""
_EXPIRE = """
UPDATE consent_current SET expired_at = %(now)s
WHERE granted AND expired_at IS NULL AND expires_at <= %(now)s
RETURNING subject_id, purpose, given_at, expires_at, policy_version
"""
# A decision no longer in force is consent history: it goes one window of that category after it
# stopped being in force (a refusal or a withdrawal when it was made, a grant when it lapsed, so the
# answer says "lapsed" for as long as a refusal says "refused"; docs/retention.md). A subject left
# with no consent and no newsletter row has its key tombstoned on `consents`: a compacted topic
# would otherwise keep its last ConsentState, keyed by a visitor id, for ever.
_FORGET = """
DELETE FROM consent_current c
WHERE NOT (c.granted AND c.expired_at IS NULL) AND COALESCE(c.expired_at, c.given_at) < %(cutoff)s
RETURNING c.subject_id
"""
_STILL_HELD = """
SELECT subject_id FROM consent_current WHERE subject_id = ANY(%(subjects)s)
UNION SELECT subject_id FROM newsletter WHERE subject_id = ANY(%(subjects)s)
"""
_STATE = """
SELECT c.subject_id, c.purpose, c.granted AND (c.expires_at IS NULL OR c.expires_at > %(now)s),
       c.given_at, c.expires_at, c.policy_version
FROM consent_current c WHERE c.subject_id = ANY(%(subjects)s) ORDER BY c.subject_id, c.purpose
"""
_NEWSLETTER_STATE = "SELECT subject_id, subscribed FROM newsletter WHERE subject_id = ANY(%s)"


def _subject(event: dict[str, Any]) -> str:
    return str(event.get("account_id") or event.get("visitor_id"))


async def consent_state(conn: psycopg.AsyncConnection[Any], subjects: list[str],
                        now_ms: int) -> dict[str, dict[str, Any]]:
    """Current consent per subject as of ``now_ms``: purposes (effective grant, times, version)
    and the newsletter flag."""
    out: dict[str, dict[str, Any]] = {s: {"purposes": [], "newsletter": False} for s in subjects}
    cur = await conn.execute(_STATE, {"now": ms_to_dt(now_ms), "subjects": subjects})
    for subject, purpose, granted, given, expires, version in await cur.fetchall():
        out[subject]["purposes"].append({
            "purpose": purpose, "granted": bool(granted), "given_at": dt_to_ms(given),
            "expires_at": dt_to_ms(expires) if expires else None, "policy_version": version,
        })
    cur = await conn.execute(_NEWSLETTER_STATE, (subjects,))
    for subject, subscribed in await cur.fetchall():
        out[subject]["newsletter"] = bool(subscribed)
    return out


async def publish_states(conn: psycopg.AsyncConnection[Any], subjects: list[str], ctx: PipelineContext,
                         first: list[OutboxItem] | None = None) -> None:
    """Queue ``first`` (expiry notices) and then each subject's current ConsentState: the state
    last, so that compaction keeps it."""
    now = ctx.clock.now_ms()
    states = await consent_state(conn, subjects, now)
    rows: list[OutboxItem] = list(first or [])
    for subject, state in states.items():
        rows.append(ctx.record("consents", subject, "ConsentState", {
            "subject_id": subject, "purposes": state["purposes"], "newsletter": state["newsletter"],
            "updated_at": now,
        }))
    await ctx.enqueue(conn, rows)


class ConsentProcessor:
    topic = "consent-events"

    async def apply(self, conn: psycopg.AsyncConnection[Any], events: list[dict[str, Any]],
                    ctx: PipelineContext) -> None:
        signals = [e for e in events if e["event_type"] == "consent.gpc_signal"]
        events = [e for e in events if e["event_type"] != "consent.gpc_signal"]
        touched = {_subject(e) for e in events}
        async with conn.pipeline(), conn.cursor() as cur:
            for event in events:
                kind, subject, at_ms = event["event_type"], _subject(event), event["occurred_at"]
                base = {"event_id": event["event_id"], "subject": subject, "event_type": kind,
                        "at": ms_to_dt(at_ms), "source": event["source"],
                        "policy_version": event.get("policy_version"), "notice_hash": event.get("notice_hash")}
                if kind in ("consent.cookies_granted", "consent.cookies_withdrawn"):
                    granted = kind == "consent.cookies_granted"
                    await cur.execute(_HISTORY, {**base, "purposes": list(event["purposes"])})
                    for purpose in dict.fromkeys(event["purposes"]):
                        expires = ms_to_dt(add_months(at_ms, COOKIE_LIFETIME_MONTHS)) if granted else None
                        await cur.execute(_DECIDE, {**base, "purpose": purpose, "granted": granted,
                                                    "expires": expires})
                else:
                    subscribed = kind == "consent.newsletter_subscribed"
                    await cur.execute(_HISTORY, {**base, "purposes": ["newsletter"]})
                    await cur.execute(_NEWSLETTER, {**base, "subscribed": subscribed,
                                                    "email": event.get("email")})
        if signals:
            touched |= await self._signals(conn, signals, ctx)
        await publish_states(conn, sorted(touched), ctx)

    async def _signals(self, conn: psycopg.AsyncConnection[Any], signals: list[dict[str, Any]],
                       ctx: PipelineContext) -> set[str]:
        """Apply Global Privacy Control to the browser's visitor id, the account the event names,
        and every account linked to the visitor (11 CCR 7025(c)(1): the browser, linked
        pseudonymous profiles and the known consumer). Returns the subjects touched."""
        visitors = sorted({e["visitor_id"] for e in signals if e.get("visitor_id")})
        rows = await conn.execute(_LINKED, (visitors,))
        by_visitor: dict[str, set[str]] = {}
        for visitor, account in await rows.fetchall():
            by_visitor.setdefault(visitor, set()).add(account)
        touched: set[str] = set()
        applied: list[Any] = []
        async with conn.pipeline():  # every statement of the batch in one round trip
            for event in signals:
                subjects = {s for s in (event.get("visitor_id"), event.get("account_id")) if s}
                subjects |= by_visitor.get(event.get("visitor_id") or "", set())
                at = ms_to_dt(event["occurred_at"])
                for subject in sorted(subjects):
                    args = {"subject": subject, "at": at}
                    await conn.execute(_HISTORY, {
                        "event_id": uuid.uuid5(uuid.UUID(event["event_id"]), subject), "subject": subject,
                        "event_type": "consent.gpc_signal", "purposes": [GPC_PURPOSE], "policy_version": None,
                        "at": at, "source": event["source"], "notice_hash": None})
                    applied.append((await conn.execute(_GPC_REFUSE, args), await conn.execute(_GPC_WITHDRAW, args)))
                    await conn.execute(_GPC_SEEN, args)
                touched |= subjects
        ctx.metrics.gpc_signals.labels("seen").inc(len(signals))
        for refused, withdrawn in applied:
            changed = bool(await refused.fetchall()) or bool(await withdrawn.fetchall())
            ctx.metrics.gpc_signals.labels("applied" if changed else "unchanged").inc()
        return touched

    async def tick(self, conn: psycopg.AsyncConnection[Any], now_ms: int, ctx: PipelineContext) -> None:
        await self._lapse(conn, now_ms, ctx)
        await self._forget(conn, now_ms, ctx)

    @staticmethod
    async def _lapse(conn: psycopg.AsyncConnection[Any], now_ms: int, ctx: PipelineContext) -> None:
        cur = await conn.execute(_EXPIRE, {"now": ms_to_dt(now_ms)})
        lapsed = await cur.fetchall()
        # A subject whose erasure is open (a store may be down) is not written again: its null
        # tombstone is already queued, and its rows are the store's to delete.
        erased = await erased_among(conn, ctx.keys, (row[0] for row in lapsed), now_ms)
        lapsed = [row for row in lapsed if row[0] not in erased]
        if not lapsed:
            return
        notices: list[OutboxItem] = []
        for subject, purpose, given, expires, version in lapsed:
            notices.append(ctx.record("consents", subject, "ConsentExpired", {
                "subject_id": subject, "purpose": purpose, "granted_at": dt_to_ms(given),
                "expired_at": dt_to_ms(expires), "policy_version": version,
            }))
            ctx.metrics.consents_expired.labels(purpose).inc()
        await publish_states(conn, sorted({row[0] for row in lapsed}), ctx, notices)

    @staticmethod
    async def _forget(conn: psycopg.AsyncConnection[Any], now_ms: int, ctx: PipelineContext) -> None:
        category = ctx.policy.categories.get("consent_history")
        if category is None:
            return
        cur = await conn.execute(_FORGET, {"cutoff": ms_to_dt(category.window.cutoff(now_ms))})
        subjects = sorted({row[0] for row in await cur.fetchall()})
        if not subjects:
            return
        cur = await conn.execute(_STILL_HELD, {"subjects": subjects})
        held = {row[0] for row in await cur.fetchall()}
        gone = [s for s in subjects if s not in held]
        await ctx.enqueue(conn, [(ctx.settings.topic("consents"), s.encode(), None) for s in gone])
        if held:  # what is left of their state, without the forgotten purposes
            await publish_states(conn, sorted(held), ctx)
