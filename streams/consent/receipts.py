"""Consent receipts: per purpose, what the person decided, on which notice, and for how long it
holds (docs/consent.md#receipts). The format, ``lifecycle-consent-receipt/1``, is modelled on the
consent record of ISO/IEC TS 27560: the notice (version and SHA-256 of its text), the purpose,
the state and its time, when it lapses, and how long the proof is kept.

A refusal is remembered like a grant: a person who refused or withdrew is not asked again before
``ask_again_after``, six months later (CNIL, cookie guidelines: a choice is kept for as long as
a consent would be, and six months is the recommended span before asking again after a refusal).
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import psycopg
import yaml

from lifecycle.core.config import PROJECT_ROOT
from lifecycle.core.policy import Policy, Window
from lifecycle.core.timeutil import DAY_MS, HOUR_MS, add_months, dt_to_ms, ms_to_dt

__all__ = ["consent_receipts", "FORMAT", "ASK_AGAIN_MONTHS"]

FORMAT = "lifecycle-consent-receipt/1"
ASK_AGAIN_MONTHS = 6
_NAMESPACE = uuid.UUID("0c4b5e51-7f0e-4d6a-93a3-1d6f2f5e8a20")
_CURRENT = """
SELECT c.purpose, c.granted, c.given_at, c.expires_at, c.expired_at, c.policy_version, c.notice_hash,
       c.decided_by, c.gpc_since,
       EXISTS (SELECT 1 FROM consent_history h WHERE h.subject_id = c.subject_id
               AND h.event_type = 'consent.cookies_granted' AND c.purpose = ANY(h.purposes)
               AND h.occurred_at < c.given_at)
FROM consent_current c WHERE c.subject_id = %s ORDER BY c.purpose
"""
_NEWSLETTER = "SELECT subscribed, updated_at, policy_version, notice_hash FROM newsletter WHERE subject_id = %s"


@functools.cache
def _controller() -> dict[str, Any]:
    data = yaml.safe_load((PROJECT_ROOT / "deploy" / "processing.yaml").read_text())
    return {k: data["controller"][k] for k in ("name", "contact")}


def _after(window: Window, at_ms: int) -> int:
    if window.unit == "hours":
        return at_ms + window.amount * HOUR_MS
    if window.unit == "days":
        return at_ms + window.amount * DAY_MS
    return add_months(at_ms, window.amount * (12 if window.unit == "years" else 1))


def _iso(ms: int | None) -> str | None:
    return ms_to_dt(ms).isoformat().replace("+00:00", "Z") if ms is not None else None


def _receipt(subject: str, purpose: str, state: str, decided: int, expires: int | None, version: str | None,
             notice: str | None, policy: Policy) -> dict[str, Any]:
    proof = policy.categories["consent_history"]
    again = add_months(decided, ASK_AGAIN_MONTHS) if state in ("refused", "withdrawn") else expires
    return {
        "receipt_format": FORMAT,
        "record_id": str(uuid.uuid5(_NAMESPACE, f"{subject}|{purpose}|{decided}")),
        "controller": _controller(),
        "subject_id": subject,
        "purpose": purpose,
        "state": state,
        "notice": {"version": version, "sha256": notice},
        "decided_at": _iso(decided),
        "expires_at": _iso(expires),
        "ask_again_after": _iso(again),
        "proof": {"category": "consent_history", "retention": f"{proof.window} from consent time",
                  "kept_until": _iso(max(_after(proof.window, decided), expires or 0))},
    }


async def consent_receipts(conn: psycopg.AsyncConnection[Any], subject: str, now_ms: int,
                           policy: Policy) -> list[dict[str, Any]]:
    """The subject's receipts as of ``now_ms``: one per cookie purpose decided, and one for the
    newsletter if the person ever chose."""
    out = []
    cur = await conn.execute(_CURRENT, (subject,))
    for (purpose, granted, given, expires, expired, version, notice, decided_by, gpc_since,
         was_granted) in await cur.fetchall():
        expires_ms = dt_to_ms(expires) if expires else None
        if granted:
            state = "expired" if expired or (expires_ms is not None and expires_ms <= now_ms) else "given"
        else:
            state = "withdrawn" if was_granted else "refused"
        receipt = _receipt(subject, purpose, state, dt_to_ms(given), expires_ms, version, notice, policy)
        # Who decided: the person, or the browser's Global Privacy Control signal (docs/processors.md).
        receipt["decided_by"] = "global_privacy_control" if decided_by == "gpc" else "choice"
        if gpc_since is not None:
            receipt["gpc_signal_since"] = _iso(dt_to_ms(gpc_since))
        out.append(receipt)
    cur = await conn.execute(_NEWSLETTER, (subject,))
    row = await cur.fetchone()
    if row is not None:
        subscribed, updated, version, notice = row
        out.append(_receipt(subject, "newsletter", "given" if subscribed else "withdrawn", dt_to_ms(updated), None,
                            version, notice, policy))
    return out
