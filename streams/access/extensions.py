"""Deadline extensions, GDPR Art. 12(3): "That period may be extended by two further months where
necessary, taking into account the complexity and number of the requests. The controller shall
inform the data subject of any such extension within one month of receipt of the request,
together with the reasons for the delay."

One extension per open access or erasure request, of one or two months, with a reason and who
decided (`lifecycle request extend`); the request's deadline moves, so its status, the overdue
gauges and alerts, the console and the certificate follow it; a `RequestExtended` notice goes on
`request-notices` for the upstream service that tells the person (docs/access.md, Deadlines)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg

from lifecycle.core.errors import LifecycleError
from lifecycle.core.timeutil import add_months, dt_to_ms, ms_to_dt
from lifecycle.streams.runtime.context import PipelineContext

__all__ = ["ExtensionRefused", "extend", "notify_extensions", "extensions_of", "MAX_MONTHS"]

MAX_MONTHS = 2


class ExtensionRefused(LifecycleError):
    """An extension Art. 12(3) does not allow, or a request that cannot be extended; says why."""


def _text(value: str, field: str, most: int) -> str:
    value = value.strip()
    if not value or len(value) > most or not value.isprintable():
        raise ExtensionRefused(f"{field}: 1 to {most} printable characters")
    return value


async def extend(conn: psycopg.AsyncConnection[Any], request_id: str, months: int, reason: str, by: str,
                 now: dt.datetime) -> dict[str, Any]:
    """Extend the open request ``request_id``; ExtensionRefused when it cannot be."""
    if months not in range(1, MAX_MONTHS + 1):
        raise ExtensionRefused(f"--months: 1 or 2 (Art. 12(3) allows two further months at most), not {months}")
    reason, by = _text(reason, "--reason", 500), _text(by, "--by", 100)
    try:
        rid = uuid.UUID(request_id)
    except ValueError:
        raise ExtensionRefused("the request id is not a UUID") from None
    cur = await conn.execute("SELECT kind, extended_at, months FROM request_extensions WHERE request_id = %s", (rid,))
    if (done := await cur.fetchone()) is not None:
        raise ExtensionRefused(f"this {done[0]} request was extended already, by {done[2]} month(s) on "
                               f"{done[1]:%Y-%m-%d}: Art. 12(3) allows one extension")
    kind, table, (account_hash, previous, state) = await _request(conn, rid)
    if state != "open":
        raise ExtensionRefused(f"the {kind} request is {state}: only an open request can be extended")
    deadline = ms_to_dt(add_months(dt_to_ms(previous), months))
    await conn.execute(f"UPDATE {table} SET deadline = %s WHERE request_id = %s", (deadline, rid))
    await conn.execute("INSERT INTO request_extensions (request_id, kind, account_hash, months, reason, requested_by, "
                       "extended_at, previous_deadline, deadline) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                       (rid, kind, account_hash, months, reason, by, now, previous, deadline))
    return {"request_id": str(rid), "kind": kind, "months": months, "previous_deadline": previous.isoformat(),
            "deadline": deadline.isoformat(), "reason": reason, "requested_by": by}


async def _request(conn: psycopg.AsyncConnection[Any], rid: uuid.UUID) -> tuple[str, str, tuple[Any, ...]]:
    """(kind, table, (account hash, deadline, state)) of the request, locked."""
    for kind, table in (("erasure", "erasure_requests"), ("access", "access_requests")):
        cur = await conn.execute(f"SELECT account_hash, deadline, state FROM {table} WHERE request_id = %s "
                                 "FOR UPDATE", (rid,))
        if (row := await cur.fetchone()) is not None:
            return kind, table, tuple(row)
    raise ExtensionRefused(f"no access or erasure request {rid}")


async def notify_extensions(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext, limit: int = 500) -> int:
    """Queue a RequestExtended notice for each extension not yet announced; how many."""
    cur = await conn.execute(
        "SELECT request_id, kind, account_hash, months, reason, requested_by, previous_deadline, deadline, extended_at "
        "FROM request_extensions WHERE notified_at IS NULL ORDER BY extended_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (limit,))
    rows = await cur.fetchall()
    if not rows:
        return 0
    await ctx.enqueue(conn, [ctx.record("request-notices", str(rid), "RequestExtended", {
        "request_id": str(rid), "kind": kind, "account_hash": account_hash, "months": months, "reason": reason,
        "requested_by": by, "previous_deadline": dt_to_ms(previous), "deadline": dt_to_ms(deadline),
        "extended_at": dt_to_ms(at)}) for rid, kind, account_hash, months, reason, by, previous, deadline, at in rows])
    await conn.execute("UPDATE request_extensions SET notified_at = now() WHERE request_id = ANY(%s)",
                       ([r[0] for r in rows],))
    return len(rows)


async def extensions_of(conn: psycopg.AsyncConnection[Any], request_ids: list[uuid.UUID]) -> dict[str, dict[str, Any]]:
    """request id -> its extension as the status answers show it (times RFC 3339)."""
    if not request_ids:
        return {}
    cur = await conn.execute("SELECT request_id, months, reason, requested_by, extended_at, previous_deadline "
                             "FROM request_extensions WHERE request_id = ANY(%s)", (request_ids,))
    return {str(rid): {"months": months, "reason": reason, "requested_by": by, "extended_at": _iso(at),
                       "previous_deadline": _iso(previous)}
            for rid, months, reason, by, at, previous in await cur.fetchall()}


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
