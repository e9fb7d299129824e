"""Access and portability (GDPR Art. 15 and 20): a copy of what every store holds about a person,
gathered through the topics as erasures are (docs/access.md).

Opening (`GET /v1/accounts/{id}/export`, `lifecycle export ACCOUNT --archive FILE`): the ledger
gets the request (the account's subjects, the stores registered now, a one-month deadline) and
an X25519 key made for it alone, its private half wrapped by the master key; the outbox gets one
AccessOrder on `access-orders` with the public half. An account that has a request open or an
archive not yet expired gets that one back, not a second.

Answers: each store sends AccessAnswer parts on `erasure-acks`, signed like its acks and sealed
to the request's key (lifecycle/core/sealed_answers.py). When every store has sent every part, the
archive is assembled in one transaction: the parts are opened and joined into one JSON file per
store, the manifest written (hashes, provided and derived data, recipients), the zip kept, and
the private key, the parts and the account id destroyed. A part that does not open is refused
and the store asked again.

The archive holds personal data: it is kept `LIFECYCLE_ACCESS_KEEP_DAYS` for the person to fetch,
then deleted by the tick, and deleted at once when the account's erasure opens.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import uuid
import zipfile
from collections.abc import Callable
from typing import Any

import psycopg

from lifecycle.core.processing import load_processing
from lifecycle.core.sealed_answers import BoxError, new_box_key, open_box, part_aad
from lifecycle.core.timeutil import DAY_MS, dt_to_ms, ms_to_dt
from lifecycle.schemas.personal import retention_words
from lifecycle.schemas.validate import text_problem
from lifecycle.streams.access.extensions import extensions_of
from lifecycle.streams.access.report import render_report
from lifecycle.streams.runtime.context import PipelineContext

__all__ = ["open_access", "access_state", "apply_answers", "access_tick", "answer_problem", "ARCHIVE_FORMAT",
           "forget_access"]

ARCHIVE_FORMAT = "lifecycle-access-archive/1"
DEADLINE_DAYS = 30  # GDPR Art. 12(3): one month
_KEY_CATEGORY = "access_answer_key"  # what the master key binds the wrapped private key to
_RETRY_MAX_S = 6 * 3600


async def open_access(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext, account_id: str) -> dict[str,
                      Any] | None:
    """The account's access request: the one open or kept, else a new one. None when the
    pipeline knows no such account (never registered, or erased)."""
    hashes = list(ctx.keys.candidates(account_id))
    current = await access_state(conn, ctx, account_id)
    if current is not None:
        return current
    cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM accounts WHERE account_id = %s), EXISTS (SELECT 1 FROM "
                             "erasure_requests WHERE account_hash = ANY(%s) AND NOT legal_hold)", (account_id, hashes))
    known, erased = await cur.fetchone()  # type: ignore[misc]
    if not known or erased:  # an erasure under way deletes what an archive would copy
        return None
    cur = await conn.execute("SELECT visitor_id FROM account_visitors WHERE account_id = %s ORDER BY 1", (account_id,))
    subjects = [account_id, *(row[0] for row in await cur.fetchall())]
    cur = await conn.execute("SELECT store FROM erasure_stores WHERE active ORDER BY store")
    stores = [row[0] for row in await cur.fetchall()]
    request_id = uuid.uuid4()
    now = ctx.clock.now_ms()
    deadline = now + DEADLINE_DAYS * DAY_MS
    private, public = new_box_key()
    wrapped = ctx.data_keys.wrapper.wrap(str(request_id), hashes[0], _KEY_CATEGORY, private)
    await conn.execute(
        "INSERT INTO access_requests (request_id, account_hash, account_id, subjects, opened_at, deadline, box_key, "
        "answer_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (request_id, hashes[0], account_id, subjects, ms_to_dt(now), ms_to_dt(deadline), wrapped, public))
    async with conn.cursor() as c:
        await c.executemany("INSERT INTO access_progress (request_id, store) VALUES (%s, %s)",
                            [(request_id, s) for s in stores])
    await ctx.enqueue(conn, [_order(ctx, request_id, account_id, subjects, now, deadline, public)])
    ctx.metrics.access_opened.inc()
    return await access_state(conn, ctx, account_id)


def _order(ctx: PipelineContext, request_id: uuid.UUID, account_id: str, subjects: list[str], issued: int,
           deadline: int,
           public: bytes) -> Any:
    return ctx.record("access-orders", account_id, "AccessOrder", {
        "request_id": str(request_id), "account_id": account_id, "subjects": subjects, "issued_at": issued,
        "deadline": deadline, "answer_key": public, "nonce": ctx.nonce("access", str(request_id))})


async def access_state(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext, account_id: str) -> dict[str,
                       Any] | None:
    """The account's latest request not expired, store by store (no personal data), with its
    archive once complete; None when there is none."""
    cur = await conn.execute(
        "SELECT request_id, state, opened_at, deadline, completed_at, expires_at, archive, archive_sha256 "
        "FROM access_requests WHERE account_hash = ANY(%s) AND state IN ('open', 'complete') "
        "ORDER BY opened_at DESC LIMIT 1", (list(ctx.keys.candidates(account_id)),))
    row = await cur.fetchone()
    if row is None:
        return None
    request_id, state, opened, deadline, completed, expires, archive, digest = row
    cur = await conn.execute("SELECT store, status, items, answered_at, error FROM access_progress "
                             "WHERE request_id = %s ORDER BY store", (request_id,))
    stores = [{"store": s, "status": status, "items": items, "answered_at": _iso(at), "error": error}
              for s, status, items, at, error in await cur.fetchall()]
    return {"request_id": str(request_id), "state": state, "opened_at": _iso(opened), "deadline": _iso(deadline),
            "completed_at": _iso(completed), "expires_at": _iso(expires),
            "overdue": state == "open" and dt_to_ms(deadline) < ctx.clock.now_ms(), "stores": stores,
            "extension": (await extensions_of(conn, [request_id])).get(str(request_id)),
            "archive": bytes(archive) if archive is not None else None, "archive_sha256": digest}


def answer_problem(answer: dict[str, Any]) -> str | None:
    """Why a decoded AccessAnswer cannot be applied (a field and its problem), or None."""
    try:
        uuid.UUID(answer["request_id"])
    except ValueError:
        return "request_id: not a UUID"
    if answer["error"] is None and not 0 <= answer["part"] < answer["parts"] <= 10_000:
        return "part: not within 0 and parts - 1 (at most 10000 parts)"
    if not 0 <= answer["items"] <= 2**53:
        return "items: out of range"
    if not 0 < len(answer["store"]) <= 64 or not answer["store"].isprintable():
        return "store: empty, too long or not printable"
    if answer["error"] is not None and text_problem(answer["error"]) is not None:
        return "error: not storable text"
    return None


async def apply_answers(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext, answers: list[dict[str, Any]],
                        processing: Callable[[], dict[str, Any]] = load_processing) -> int:
    """Keep the parts of open requests (a part seen twice is kept once), mark the stores that sent
    every part, and assemble the archive of each request every store has answered. Returns how
    many were assembled. ``processing``: deploy/processing.yaml, quoted by the manifest."""
    parts = [(uuid.UUID(a["request_id"]), a["store"], a["part"], a["sealed"]) for a in answers if a["error"] is None]
    failed = [(uuid.UUID(a["request_id"]), a["store"], a["error"][:200]) for a in answers if a["error"] is not None]
    if parts:
        async with conn.cursor() as c:
            await c.executemany(
                "INSERT INTO access_parts (request_id, store, part, sealed) SELECT %s, %s, %s, %s "
                "WHERE EXISTS (SELECT 1 FROM access_progress p JOIN access_requests r USING (request_id) "
                "WHERE p.request_id = %s AND p.store = %s AND r.state = 'open' AND p.status <> 'answered') "
                "ON CONFLICT DO NOTHING", [(r, s, n, b, r, s) for r, s, n, b in parts])
    if failed:
        async with conn.cursor() as c:
            await c.executemany("UPDATE access_progress SET status = 'failed', error = %s WHERE request_id = %s "
                                "AND store = %s AND status = 'pending'", [(e, r, s) for r, s, e in failed])
    totals = {(uuid.UUID(a["request_id"]), a["store"]): (a["parts"], a["items"]) for a in answers
              if a["error"] is None}
    if totals:
        keys = list(totals)
        await conn.execute(
            "UPDATE access_progress p SET status = 'answered', parts = t.parts, items = t.items, answered_at = now(), "
            "error = NULL FROM unnest(%s::uuid[], %s::text[], %s::int[], %s::bigint[]) AS t(request_id, store, parts, "
            "items) WHERE p.request_id = t.request_id AND p.store = t.store AND p.status <> 'answered' "
            "AND (SELECT count(*) FROM access_parts x WHERE x.request_id = t.request_id AND x.store = t.store) "
            "= t.parts",
            ([k[0] for k in keys], [k[1] for k in keys], [totals[k][0] for k in keys], [totals[k][1] for k in keys]))
    touched = sorted({r for r, _, _, _ in parts})
    cur = await conn.execute(
        "SELECT r.request_id FROM access_requests r WHERE r.request_id = ANY(%s) AND r.state = 'open' "
        "AND NOT EXISTS (SELECT 1 FROM access_progress p WHERE p.request_id = r.request_id AND p.status <> 'answered') "
        "FOR UPDATE", (touched,))
    ready = [row[0] for row in await cur.fetchall()]
    for request_id in ready:
        await _assemble(conn, ctx, request_id, processing())
    return len(ready)


async def _assemble(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext, request_id: uuid.UUID,
                    processing: dict[str, Any]) -> None:
    cur = await conn.execute("SELECT account_hash, box_key, opened_at FROM access_requests WHERE request_id = %s",
                             (request_id,))
    account_hash, wrapped, opened = await cur.fetchone()  # type: ignore[misc]
    private = ctx.data_keys.wrapper.unwrap(str(request_id), account_hash, _KEY_CATEGORY, bytes(wrapped))
    cur = await conn.execute("SELECT p.store, p.parts, x.part, x.sealed FROM access_progress p "
                             "JOIN access_parts x USING (request_id, store) WHERE p.request_id = %s "
                             "ORDER BY p.store, x.part", (request_id,))
    chunks: dict[str, list[bytes]] = {}
    unreadable: set[str] = set()
    for store, total, part, sealed in await cur.fetchall():
        try:
            chunks.setdefault(store, []).append(open_box(private, bytes(sealed),
                                                         part_aad(str(request_id), store, part, total)))
        except BoxError:
            unreadable.add(store)
    if unreadable:  # altered or sealed to another key: that store is asked again, nothing is assembled
        await conn.execute("DELETE FROM access_parts WHERE request_id = %s AND store = ANY(%s)",
                           (request_id, sorted(unreadable)))
        await conn.execute("UPDATE access_progress SET status = 'failed', error = 'a part did not open', "
                           "last_issued_at = now() - interval '1 day' WHERE request_id = %s AND store = ANY(%s)",
                           (request_id, sorted(unreadable)))
        ctx.metrics.access_parts_refused.inc(len(unreadable))
        return
    documents = {store: json.loads(b"".join(parts)) for store, parts in chunks.items()}
    retention = {c: retention_words(ctx.policy, c) for c in ctx.policy.categories}
    archive = build_archive(str(request_id), account_hash, opened, documents, processing, retention)
    digest = hashlib.sha256(archive).hexdigest()
    keep_days = ctx.settings.access_keep_days
    await conn.execute(
        "UPDATE access_requests SET state = 'complete', completed_at = now(), archive = %s, archive_sha256 = %s, "
        "expires_at = now() + make_interval(days => %s), box_key = NULL, account_id = NULL, subjects = NULL "
        "WHERE request_id = %s", (archive, digest, keep_days, request_id))
    await conn.execute("DELETE FROM access_parts WHERE request_id = %s", (request_id,))
    ctx.metrics.access_completed.inc()


def build_archive(request_id: str, account_hash: str, opened: dt.datetime, documents: dict[str, Any],
                  processing: dict[str, Any], retention: dict[str, str] | None = None) -> bytes:
    """The zip: ``report.html`` for the person to read (streams/access/report.py; ``retention``:
    each category's keeping time in words), ``stores/<store>.json`` for each store, and
    ``manifest.json``: the format, the
    request, each file's SHA-256, size and items; per category, what it is, why, on what basis
    and whether you provided it, it was observed as you used the service, or derived (Art. 20
    covers the first two); and the recipients, the stores and what each holds (Art. 15(1)(c), 19)."""
    described = processing.get("categories", {})
    files: list[dict[str, Any]] = []
    held: set[str] = set()
    buffer = io.BytesIO()
    stamp = (1980, 1, 1, 0, 0, 0)  # the same answer gives the same bytes
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for store in sorted(documents):
            body = json.dumps(documents[store], indent=2, sort_keys=True).encode()
            name = f"stores/{store}.json"
            archive.writestr(zipfile.ZipInfo(name, date_time=stamp), body, compress_type=zipfile.ZIP_DEFLATED)
            held.update(documents[store].get("holds", []))
            files.append({"path": name, "store": store, "sha256": hashlib.sha256(body).hexdigest(),
                          "bytes": len(body), "items": documents[store].get("items", 0)})
        categories = {name: {"data": described.get(name, {}).get("data"),
                             "purpose": described.get(name, {}).get("purpose"),
                             "legal_basis": described.get(name, {}).get("basis"),
                             "source": described.get(name, {}).get("source"),
                             "portable": described.get(name, {}).get("source") in ("provided", "observed")}
                      for name in sorted(held)}
        manifest = {"format": ARCHIVE_FORMAT, "request_id": request_id, "account_hash": account_hash,
                    "requested_at": opened.isoformat().replace("+00:00", "Z"), "files": files,
                    "categories": categories,
                    "provided": sorted(c for c, v in categories.items() if v["source"] == "provided"),
                    "observed": sorted(c for c, v in categories.items() if v["source"] == "observed"),
                    "derived": sorted(c for c, v in categories.items() if v["source"] == "derived"),
                    "recipients": [{"store": store, "categories": sorted(documents[store].get("holds", []))}
                                   for store in sorted(documents)],
                    "controller": processing.get("controller", {})}
        report = render_report(request_id, opened, documents, processing, retention or {})
        archive.writestr(zipfile.ZipInfo("report.html", date_time=stamp), report, compress_type=zipfile.ZIP_DEFLATED)
        manifest["report"] = {"path": "report.html", "sha256": hashlib.sha256(report).hexdigest(),
                              "bytes": len(report)}
        archive.writestr(zipfile.ZipInfo("manifest.json", date_time=stamp),
                         json.dumps(manifest, indent=2, sort_keys=True).encode(), compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


async def access_tick(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext, now_ms: int) -> None:
    """Ask again the stores that failed or stayed silent (exponential backoff), delete the
    archives past their keeping time, refresh the gauges."""
    cur = await conn.execute(
        "WITH due AS (UPDATE access_progress p SET attempts = p.attempts + 1, last_issued_at = now(), "
        "status = 'pending' FROM access_requests r WHERE r.request_id = p.request_id AND r.state = 'open' "
        "AND p.status IN ('pending', 'failed') "
        "AND p.last_issued_at + make_interval(secs => least(%s * power(2, p.attempts - 1), %s)) <= now() "
        "RETURNING p.request_id) SELECT DISTINCT r.request_id, r.account_id, r.subjects, r.opened_at, r.deadline, "
        "r.answer_key FROM access_requests r WHERE r.request_id IN (SELECT request_id FROM due)",
        (ctx.settings.erasure_retry_s, _RETRY_MAX_S))
    orders = [_order(ctx, rid, account, list(subjects), dt_to_ms(opened), dt_to_ms(deadline), bytes(public))
              for rid, account, subjects, opened, deadline, public in await cur.fetchall()]
    await ctx.enqueue(conn, orders)
    await conn.execute("UPDATE access_requests SET state = 'expired', archive = NULL WHERE state = 'complete' "
                       "AND expires_at <= now()")
    cur = await conn.execute("SELECT count(*), count(*) FILTER (WHERE deadline < %s) FROM access_requests "
                             "WHERE state = 'open'", (ms_to_dt(now_ms),))
    pending, overdue = await cur.fetchone()  # type: ignore[misc]
    ctx.metrics.access_pending.set(pending)
    ctx.metrics.access_overdue.set(overdue)


async def forget_access(conn: psycopg.AsyncConnection[Any], account_hashes: list[str]) -> None:
    """An erasure opened: the account's access requests and archives go at once."""
    await conn.execute("DELETE FROM access_requests WHERE account_hash = ANY(%s)", (account_hashes,))


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
