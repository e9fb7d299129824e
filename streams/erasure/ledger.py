"""The erasure ledger's rows as the rest of the feature reads them: a request, the order built from
it, and the status published for it (docs/erasure.md, "Ledger first")."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import psycopg

from lifecycle.core.keys import Keyring
from lifecycle.core.timeutil import dt_to_ms
from lifecycle.schemas.statuses import SUCCESS
from lifecycle.streams.access import extensions_of
from lifecycle.streams.runtime.context import OutboxItem, PipelineContext

__all__ = ["Request", "REQUEST_COLUMNS", "SUCCESS_SQL", "columns", "erasure_status", "order_for", "publish_status",
           "request_of", "statuses"]

SUCCESS_SQL = ", ".join(f"'{s}'" for s in sorted(SUCCESS))  # constants of the contract, not input


@dataclasses.dataclass(frozen=True)
class Request:
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


# Columns of erasure_requests r that make a Request, in order.
REQUEST_COLUMNS = ("r.request_id, r.account_id, r.subjects, r.reason, r.opened_at, r.deadline, r.legal_hold, "
                    "r.round, coalesce(r.subject_hashes, ARRAY[r.account_hash])")


def request_of(row: tuple[Any, ...]) -> Request:
    rid, account, subjects, reason, opened, deadline, hold, round_, hashes = row
    return Request(rid, account, list(subjects or ([account] if account else [])), reason, dt_to_ms(opened),
                    dt_to_ms(deadline), hold, round_, list(hashes))


def order_for(ctx: PipelineContext, req: Request, action: str = "erase") -> OutboxItem:
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


async def publish_status(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext, request_ids: list[Any]) -> None:
    """Queue the current ErasureStatus of each request."""
    rows = []
    for status in await statuses(conn, "r.request_id = ANY(%b::uuid[])", (list(request_ids),)):
        rows.append(ctx.record("erasure-status", status["request_id"], "ErasureStatus", {
            "request_id": status["request_id"], "account_hash": status["account_hash"], "state": status["state"],
            "opened_at": status["opened_at"], "deadline": status["deadline"], "completed_at": status["completed_at"],
            "stores": [{"store": s["store"], "status": s["status"], "items_erased": s["items_erased"],
                        "acknowledged_at": s["acknowledged_at"]} for s in status["stores"]],
        }))
    await ctx.enqueue(conn, rows)


async def statuses(conn: psycopg.AsyncConnection[Any], where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
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



def columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as columns, for one ``unnest`` of arrays per statement."""
    return [list(col) for col in zip(*rows, strict=True)]


async def erasure_status(conn: psycopg.AsyncConnection[Any], keys: Keyring, account_id: str) -> list[dict[str, Any]]:
    """Every erasure of the account (by its keyed hash under any key of the ring), store by store;
    no personal data."""
    return await statuses(conn, "r.account_hash = ANY(%b::text[])", (list(keys.candidates(account_id)),))
