"""Who an erasure silences, and for how long (docs/erasure.md, "The identity rule").

An erasure covers the account id and each visitor id linked to no other account that is still
live. Afterwards the suppression list holds keyed hashes of those identifiers, never the
identifiers, and every writer asks it before writing anything about a person: the intake, the
clock-driven ticks, and the outbox relay as the last line.

- An event that carries an account id is judged by that id alone: an event of a live account is
  never silenced because the browser it came from was once used by an erased one.
- An event without an account id is judged by its visitor id.
- An account id is never reused, so its entry lasts for ever. A visitor id lives in a cookie that
  lasts at most 13 months (policy, COOKIES): its entry holds while the erasure is open and lapses 13
  months after it completed; it is lifted sooner when, after completion, a live account is seen
  with that visitor id (the browser is that account's now).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from lifecycle.core.keys import Keyring
from lifecycle.core.timeutil import ms_to_dt

__all__ = ["erased_among", "silenced", "VISITOR_SUPPRESSION_MONTHS", "lift_visitors"]

VISITOR_SUPPRESSION_MONTHS = 13  # the cookie's lifetime: a visitor id cannot outlive it

_ERASED = """
SELECT subject_hash FROM suppressed_subjects
WHERE subject_hash = ANY(%b) AND (expires_at IS NULL OR expires_at > %s)
"""


async def erased_among(conn: psycopg.AsyncConnection[Any], keys: Keyring, subjects: Iterable[str | None],
                       now_ms: int) -> set[str]:
    """Those of ``subjects`` (account or visitor ids) on the suppression list as of ``now_ms``;
    one statement, whatever their number."""
    candidates = {s: keys.candidates(s) for s in set(subjects) if s}
    if not candidates:
        return set()
    cur = await conn.execute(_ERASED, ([h for hs in candidates.values() for h in hs], ms_to_dt(now_ms)))
    hits = {row[0] for row in await cur.fetchall()}
    return {s for s, hs in candidates.items() if any(h in hits for h in hs)}


def silenced(event: dict[str, Any], erased: set[str]) -> bool:
    """The identity rule for one event, given the erased identifiers among the batch's."""
    account = event.get("account_id")
    if account:
        return account in erased
    visitor = event.get("visitor_id")
    return bool(visitor) and visitor in erased


async def lift_visitors(conn: psycopg.AsyncConnection[Any], keys: Keyring, visitors: Iterable[str]) -> None:
    """A live account was seen with these visitor ids: they are no longer an erased person's."""
    hashes = [h for v in set(visitors) for h in keys.candidates(v)]
    if hashes:
        await conn.execute("DELETE FROM suppressed_subjects WHERE subject_hash = ANY(%b) AND expires_at IS NOT NULL "
                           "AND expires_at <> 'infinity'", (hashes,))
