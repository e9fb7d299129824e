"""What the console reads, with the reader's role (SELECT on the erasure record, the stores, the
certificates, and the timing columns of access requests; lifecycle/core/pgroles.py). No query
returns an account id, a subject id or any value of personal data."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

__all__ = ["Filters", "overview", "erasures", "erasure", "certificate", "time_to_proof", "per_day"]


async def _all(conn: Any, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    cur = await conn.execute(sql, params)
    return list(await cur.fetchall())


async def overview(conn: Any, now: dt.datetime) -> dict[str, Any]:
    [(open_, overdue)] = await _all(conn, "SELECT count(*) FILTER (WHERE state = 'open'), count(*) FILTER (WHERE "
                                          "state = 'open' AND deadline < %s) FROM erasure_requests", (now,))
    [(complete, regressed, replaying)] = await _all(
        conn, "SELECT count(*) FILTER (WHERE state = 'complete'), count(*) FILTER (WHERE state = 'regressed'), "
              "count(*) FILTER (WHERE state = 'replaying') FROM erasure_proofs")
    access = await _all(conn, "SELECT request_id, opened_at, deadline FROM access_requests WHERE state = 'open' "
                              "ORDER BY deadline LIMIT 20")
    stores = await _all(
        conn, "SELECT s.store, s.active, s.origin, count(p.*) FILTER (WHERE p.status = 'pending'), "
              "max(p.acknowledged_at), count(p.*) FILTER (WHERE p.status = 'failed') "
              "FROM erasure_stores s LEFT JOIN erasure_progress p ON p.store = s.store "
              "GROUP BY s.store, s.active, s.origin ORDER BY s.store")
    return {"open": open_, "overdue": overdue, "complete": complete, "regressed": regressed,
            "replaying": replaying, "access": access, "stores": stores}


async def time_to_proof(conn: Any) -> list[float]:
    """Seconds from closure to proof of every completed erasure (the newest 5,000)."""
    rows = await _all(conn, "SELECT extract(epoch FROM completed_at - opened_at) FROM erasure_proofs "
                            "ORDER BY completed_at DESC LIMIT 5000")
    return [float(r[0]) for r in rows]


async def per_day(conn: Any, now: dt.datetime, days: int = 30) -> list[tuple[dt.date, int]]:
    """Erasures opened on each of the last ``days`` days (event time), oldest first."""
    start = (now - dt.timedelta(days=days - 1)).date()
    rows = dict(await _all(conn, "SELECT (opened_at AT TIME ZONE 'UTC')::date, count(*) FROM erasure_requests "
                                 "WHERE opened_at >= %s GROUP BY 1", (dt.datetime.combine(start, dt.time(), dt.UTC),)))
    return [(start + dt.timedelta(days=i), int(rows.get(start + dt.timedelta(days=i), 0))) for i in range(days)]


@dataclasses.dataclass(frozen=True)
class Filters:
    state: str = ""  # open, complete, regressed
    store: str = ""
    overdue: bool = False
    since: dt.date | None = None
    until: dt.date | None = None
    hashes: tuple[str, ...] = ()  # an account looked up: its keyed hashes


async def erasures(conn: Any, f: Filters, now: dt.datetime, limit: int = 200) -> list[tuple[Any, ...]]:
    """(request id, account hash, state, opened, deadline, completed, overdue, pending stores), newest first."""
    where: list[str] = ["true"]
    params: list[Any] = []
    if f.state == "open":
        where.append("r.state = 'open'")
    elif f.state in ("complete", "regressed", "replaying"):
        where.append("e.state = %s")
        params.append(f.state)
    if f.overdue:
        where.append("r.state = 'open' AND r.deadline < %s")
        params.append(now)
    if f.store:
        where.append("EXISTS (SELECT 1 FROM erasure_progress p WHERE p.request_id = r.request_id AND p.store = %s "
                     "AND p.status = 'pending')")
        params.append(f.store)
    if f.since:
        where.append("r.opened_at >= %s")
        params.append(dt.datetime.combine(f.since, dt.time(), dt.UTC))
    if f.until:
        where.append("r.opened_at < %s")
        params.append(dt.datetime.combine(f.until + dt.timedelta(days=1), dt.time(), dt.UTC))
    if f.hashes:
        where.append("r.account_hash = ANY(%s)")
        params.append(list(f.hashes))
    return await _all(conn, f"""
        SELECT r.request_id, r.account_hash, COALESCE(e.state, r.state), r.opened_at, r.deadline, r.completed_at,
               r.state = 'open' AND r.deadline < %s,
               (SELECT string_agg(p.store, ', ' ORDER BY p.store) FROM erasure_progress p
                 WHERE p.request_id = r.request_id AND p.status = 'pending')
        FROM erasure_requests r LEFT JOIN erasure_proofs e USING (request_id)
        WHERE {" AND ".join(where)} ORDER BY r.opened_at DESC LIMIT %s""", [now, *params, limit])


async def erasure(conn: Any, request_id: uuid.UUID) -> dict[str, Any] | None:
    """One erasure's record for its timeline: the request, each store's progress, its proof."""
    rows = await _all(conn, "SELECT request_id, account_hash, reason, legal_hold, opened_at, deadline, completed_at, "
                            "state, keys_destroyed_at, round, verify_issued_at FROM erasure_requests "
                            "WHERE request_id = %s", (request_id,))
    if not rows:
        return None
    keys = ("request_id", "account_hash", "reason", "legal_hold", "opened_at", "deadline", "completed_at", "state",
            "keys_destroyed_at", "round", "verify_issued_at")
    out: dict[str, Any] = dict(zip(keys, rows[0], strict=True))
    out["stores"] = await _all(conn, "SELECT store, status, items_erased, attempts, last_issued_at, acknowledged_at, "
                                     "error, verified_at, items_found FROM erasure_progress WHERE request_id = %s "
                                     "ORDER BY store", (request_id,))
    proof = await _all(conn, "SELECT state, regressions, regressed_at, last_verified_at, replays, replayed_at, "
                             "replay_store FROM erasure_proofs WHERE request_id = %s", (request_id,))
    out["proof"] = dict(zip(("state", "regressions", "regressed_at", "last_verified_at", "replays", "replayed_at",
                             "replay_store"), proof[0], strict=True)) if proof else None
    extended = await _all(conn, "SELECT months, reason, requested_by, extended_at, previous_deadline "
                                "FROM request_extensions WHERE request_id = %s", (request_id,))
    out["extension"] = dict(zip(("months", "reason", "requested_by", "extended_at", "previous_deadline"), extended[0],
                                strict=True)) if extended else None
    issued = await _all(conn, "SELECT issued_at FROM erasure_certificates WHERE request_id = %s", (request_id,))
    out["certificate_issued_at"] = issued[0][0] if issued else None
    return out


async def certificate(conn: Any, request_id: uuid.UUID) -> bytes | None:
    rows = await _all(conn, "SELECT body FROM erasure_certificates WHERE request_id = %s", (request_id,))
    return bytes(rows[0][0]) if rows else None
