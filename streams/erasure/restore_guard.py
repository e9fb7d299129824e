"""The restore guard: completed erasures re-applied to a store restored from a backup, which
brings erased people back (`lifecycle erasure replay --store NAME [--since DATE]`).

Nothing of the erased identifiers is kept for it. A replay makes every proof completed since
``since`` due for verification at the worker's next tick (streams/erasure/tick.py): the orders name
the subjects by keyed hashes alone, the connectors hash the ids their store holds and match, and
a store that finds data answers so. What the replayed store (or a store it feeds) finds starts a
new round as any finding does (erased again, then verified by every store), but the proof records it as a replay
(``replays``, ``replayed_at``, state ``replaying`` meanwhile) instead of a regression, and the
finding is counted as ``replayed``. A replay run twice finds nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg

__all__ = ["request_replay", "replay_report"]


async def request_replay(conn: psycopg.AsyncConnection[Any], store: str, since: dt.datetime | None) -> dict[str, Any]:
    """Record the replay and make its proofs due; what was asked."""
    replay_id = uuid.uuid4()
    cur = await conn.execute(
        "UPDATE erasure_proofs SET reverify_at = now(), replay_id = %s, replay_store = %s "
        "WHERE state = 'complete' AND (%s::timestamptz IS NULL OR completed_at >= %s) RETURNING request_id",
        (replay_id, store, since, since))
    due = [row[0] for row in await cur.fetchall()]
    proofs = len(due)
    # A new round of verification: answers to earlier verify orders, still in flight, were given
    # before the restore and must not count as the replay's answer.
    await conn.execute("UPDATE erasure_requests SET round = round + 1, verify_issued_at = NULL, verify_attempts = 0 "
                       "WHERE request_id = ANY(%s)", (due,))
    await conn.execute("INSERT INTO erasure_replays (replay_id, store, since, proofs) VALUES (%s, %s, %s, %s)",
                       (replay_id, store, since, proofs))
    return {"replay_id": str(replay_id), "store": store, "since": since.isoformat() if since else None,
            "proofs": proofs}


async def replay_report(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
    """Every replay: proofs it covers, how many the store has answered (``checked``), how many
    it found data in and erased again (``replayed``), and how many are being erased again now."""
    cur = await conn.execute(
        "SELECT r.replay_id, r.store, r.since, r.requested_at, r.proofs, "
        "count(*) FILTER (WHERE e.replay_store IS NULL AND e.state = 'complete'), "
        "count(*) FILTER (WHERE e.replayed_at >= r.requested_at), "
        "count(*) FILTER (WHERE e.state = 'replaying') "
        "FROM erasure_replays r LEFT JOIN erasure_proofs e ON e.replay_id = r.replay_id "
        "GROUP BY r.replay_id ORDER BY r.requested_at")
    return [{"replay_id": str(rid), "store": store, "since": since.isoformat() if since else None,
             "requested_at": requested.isoformat(), "proofs": proofs, "checked": checked, "replayed": replayed,
             "erasing_again": erasing} for rid, store, since, requested, proofs, checked, replayed, erasing
            in await cur.fetchall()]
