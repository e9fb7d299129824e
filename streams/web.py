"""HTTP on one port, served by every worker: event ingestion, consent, erasure status, the key
service, health and metrics. Tokens, scopes and body limits are checked before these views run
(streams/http_auth.py).

`POST /v1/events` accepts one event or a batch as JSON, all or nothing: a batch with any bad
event is answered 400 with one error per bad field (its index, field and problem; never its
value) and nothing of it is sent. Otherwise the batch is written to the ingest journal in
PostgreSQL (streams/journal.py) and 202 comes back once that committed: nothing answered 202 is
lost, even if the broker's log is. The events are sent to the broker at once; the journal relay
sends whatever that send did not reach. While `up` drains before stopping, POST answers 503.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from typing import TYPE_CHECKING, Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lifecycle.core.clock import latest_plausible
from lifecycle.core.pgroles import component_dsn
from lifecycle.core.timeutil import ms_to_dt
from lifecycle.schemas.errors import ValidationFailed
from lifecycle.schemas.gpc import gpc_signals
from lifecycle.schemas.validate import from_json, subject_key, text_problem
from lifecycle.streams.access import open_access
from lifecycle.streams.db import Database, describe
from lifecycle.streams.erasure import erasure_status
from lifecycle.streams.http_auth import BodyTooLarge, BodyTooSlow, read_body
from lifecycle.streams.journal import journal_accept, journal_mark_sent
from lifecycle.streams.openapi import document_bytes
from lifecycle.streams.processors.consent import consent_state
from lifecycle.streams.receipts import consent_receipts
from lifecycle.streams.sealing import presealed_problems, seal_events

if TYPE_CHECKING:
    from lifecycle.streams.app import Pipeline

__all__ = ["register_views", "MAX_BODY_BYTES", "MAX_BATCH"]

log = logging.getLogger("lifecycle.http")
MAX_BODY_BYTES = 1 << 20
MAX_BATCH = 1000
HTTP_REASONS = ("unauthorized", "too_large", "invalid_json", "invalid_event", "database_unavailable", "draining")


_KID = re.compile(r"[A-Za-z0-9_-]{22}")  # 16 bytes, base64url without padding (docs/protocol.md)


def _problem(index: int | None, field: str, problem: str) -> dict[str, Any]:
    return {"index": index, "field": field, "problem": problem}


def register_views(pipeline: Pipeline) -> None:
    app, settings, codec = pipeline.app, pipeline.settings, pipeline.codec
    data_keys = pipeline.context.data_keys
    rejected = pipeline.metrics.events_rejected
    for reason in HTTP_REASONS:
        rejected.labels("http", reason)
    db = Database(component_dsn(settings, "reader"))  # the reads: a role that can do nothing else
    journal_db = Database(settings.postgres_dsn or "")
    journal_lock = asyncio.Lock()  # one connection: its transactions one at a time
    draining = settings.state_dir / "run" / "draining"  # written by `up` on Ctrl-C (lifecycle/supervisor.py)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    children = settings.state_dir / "run" / "children.json"  # written by `up` (lifecycle/supervisor.py)
    seen_failing: set[str] = set()

    def failing_children() -> list[str]:
        """The processes `up` reports failing; this worker keeps serving (names only, no data)."""
        try:
            failing = [str(c) for c in json.loads(children.read_text()).get("failing", [])][:64]
        except (OSError, ValueError, AttributeError):
            failing = []
        for child in seen_failing | set(failing):
            pipeline.metrics.child_failing.labels(child).set(1 if child in failing else 0)
        seen_failing.update(failing)
        return failing

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        checks = {"consumer_group_joined": pipeline.health.ready}
        ok = all(checks.values())
        # A log reset is reported, not a failure: the intake has already started again. A failing
        # connector is reported too: this worker is ready, and the alert names the child.
        return web.json({"status": "ready" if ok else "starting", "checks": checks,
                         "log_resets": pipeline.health.log_resets, "failing_children": failing_children()},
                        status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        failing_children()
        body = generate_latest(pipeline.metrics.registry)
        return web.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    # streams/openapi.py: the route table's document, with this worker's retention categories.
    openapi = document_bytes(codec.catalog, list(pipeline.context.policy.categories))

    @app.page("/openapi.json")
    async def openapi_document(web: Any, request: Any) -> Any:
        return web.bytes(openapi, content_type="application/json")

    @app.page("/v1/events")
    class Events(faust.web.View):
        async def post(self, request: Any) -> Any:
            try:
                return await self._post(request)
            except Exception as exc:  # never a 500 with a traceback for a client's input
                log.warning("POST /v1/events failed: %s", describe(exc))
                return self.json({"error": "internal error"}, status=500)

        def _refuse(self, status: int, reason: str, errors: list[dict[str, Any]]) -> Any:
            rejected.labels("http", reason).inc()
            return self.json({"errors": errors}, status=status)

        async def _post(self, request: Any) -> Any:
            if draining.exists():
                return self._refuse(503, "draining", [_problem(None, "$", "stopping; retry against another worker")])
            try:  # the bearer token and its scope were checked before this view (streams/http_auth.py)
                body = await read_body(request, MAX_BODY_BYTES, settings.http_body_timeout_s)
            except BodyTooLarge:
                return self._refuse(413, "too_large", [_problem(None, "$", f"body over {MAX_BODY_BYTES} bytes")])
            except BodyTooSlow:
                pipeline.metrics.http_refused.labels("too_slow").inc()
                return self.json({"errors": [_problem(None, "$", "body not received in time")]}, status=408,
                                 headers={"Connection": "close"})
            try:
                doc = json.loads(body)
            except (ValueError, RecursionError):
                return self._refuse(400, "invalid_json", [_problem(None, "$", "not valid JSON (UTF-8)")])
            batch = doc if isinstance(doc, list) else [doc]
            if not batch or len(batch) > MAX_BATCH:
                return self._refuse(400, "invalid_event", [_problem(None, "$", f"send 1 to {MAX_BATCH} events")])
            errors: list[dict[str, Any]] = []
            accepted: list[tuple[Any, dict[str, Any]]] = []
            not_after = latest_plausible(settings, pipeline.clock)
            for index, event in enumerate(batch):
                try:
                    accepted.append(from_json(event, codec.catalog, not_after))
                except ValidationFailed as exc:
                    errors.extend(_problem(index, e.field, e.problem) for e in exc.errors)
            if not errors and settings.encrypt_personal_data:
                try:
                    errors.extend(_problem(index, name, "looks sealed (lc1:) but does not open as this subject's "
                                           "field: send it in clear, or sealed under its own subject's key")
                                  for index, name in await presealed_problems(journal_db, data_keys, accepted))
                except Exception as exc:
                    log.warning("ingestion could not reach PostgreSQL: %s", describe(exc))
                    return self._refuse(503, "database_unavailable",
                                        [_problem(None, "$", "database unavailable, retry")])
            if errors:
                return self._refuse(400, "invalid_event", errors)
            # Global Privacy Control: the browser's opt-out travels with what it sends.
            signals = gpc_signals(codec.catalog, accepted) if request.headers.get("Sec-GPC", "").strip() == "1" \
                else []
            events = accepted + signals

            async def accept(conn: Any) -> list[tuple[str, str, bytes, bytes]]:
                # Sealed in the journal's transaction: the keys it creates commit with the events.
                values = (await seal_events(conn, data_keys, events) if settings.encrypt_personal_data
                          else [v for _, v in events])
                framed = [(str(value["event_id"]), settings.topic(record.topic),
                           subject_key(record, value).encode(), codec.encode(record, value))
                          for (record, _), value in zip(events, values, strict=True)]
                await journal_accept(conn, framed)
                return framed

            try:
                async with journal_lock:
                    rows = await journal_db.run("ingest journal", accept)
            except Exception as exc:
                log.warning("ingestion could not reach PostgreSQL: %s", describe(exc))
                return self._refuse(503, "database_unavailable", [_problem(None, "$", "database unavailable, retry")])
            try:  # durable already: a failure here is the journal relay's to repair
                futures = [await app.producer.send(topic, key=key, value=value, partition=None, timestamp=None,
                                                   headers=None) for _, topic, key, value in rows]
                for fut in futures:
                    await fut
                async with journal_lock:
                    await journal_db.run("ingest journal", lambda conn: journal_mark_sent(conn, [r[0] for r in rows]))
            except Exception as exc:
                log.info("accepted events not sent yet (%s); the journal relay will send them", describe(exc))
            answer: dict[str, Any] = {"accepted": len(accepted), "event_ids": [v["event_id"] for _, v in accepted]}
            if signals:
                answer["gpc_signals"] = len(signals)
            return self.json(answer, status=202)

    keys_db = Database(settings.postgres_dsn or "")
    known_categories = set(pipeline.context.policy.categories)

    class _Keys(faust.web.View):
        """The key service for producers that seal and consumers that open (docs/crypto-shredding.md)."""

        async def _body(self, request: Any, field: str) -> tuple[list[Any] | None, Any]:
            try:
                body = await read_body(request, MAX_BODY_BYTES, settings.http_body_timeout_s)
            except BodyTooLarge:
                return None, self.json({"errors": [_problem(None, "$", "body too large")]}, status=413)
            except BodyTooSlow:
                pipeline.metrics.http_refused.labels("too_slow").inc()
                return None, self.json({"errors": [_problem(None, "$", "body not received in time")]}, status=408,
                                       headers={"Connection": "close"})
            try:
                items = json.loads(body)[field]
            except (ValueError, KeyError, TypeError, RecursionError):
                return None, self.json({"errors": [_problem(None, field, "expected a JSON object with this list")]},
                                       status=400)
            if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
                return None, self.json({"errors": [_problem(None, field, f"1 to {MAX_BATCH} items")]}, status=400)
            return items, None

        async def _keys(self, fn: Any) -> tuple[bool, Any]:
            """(done, answer): ``fn`` run on the database, or the 503 that says it is unavailable."""
            try:
                return True, await keys_db.run("data keys", fn)
            except Exception as exc:
                log.warning("key service could not reach PostgreSQL: %s", describe(exc))
                return False, self.json({"error": "database unavailable"}, status=503)

    @app.page("/v1/keys")
    class Keys(_Keys):
        async def post(self, request: Any) -> Any:
            """The keys to seal with: one per (subject, category), created on first use; null once erased."""
            items, refusal = await self._body(request, "subjects")
            if items is None:
                return refusal
            pairs, errors = [], []
            for index, item in enumerate(items):
                subject = item.get("subject") if isinstance(item, dict) else None
                category = item.get("category") if isinstance(item, dict) else None
                if not isinstance(subject, str) or _id_problem(subject) is not None:
                    errors.append(_problem(index, "subject", "a string of 1 to 256 printable characters"))
                elif category not in known_categories:
                    errors.append(_problem(index, "category", "not a category of the retention policy"))
                else:
                    pairs.append((subject, category))
            if errors:
                return self.json({"errors": errors}, status=400)
            done, prepared = await self._keys(lambda conn: data_keys.prepare(conn, pairs))
            if not done:
                return prepared
            out = []
            for subject, category in pairs:
                key = prepared[(data_keys.hash_of(subject), category)]
                out.append({"subject": subject, "category": category, "kid": key.kid,
                            "key": base64.b64encode(key.raw).decode() if key.raw else None})
            return self.json({"keys": out})

    @app.page("/v1/keys/lookup")
    class KeyLookup(_Keys):
        async def post(self, request: Any) -> Any:
            """The keys sealed values name: the key, or null once destroyed; unknown kids are absent."""
            kids, refusal = await self._body(request, "kids")
            if kids is None:
                return refusal
            if not all(isinstance(k, str) and _KID.fullmatch(k) for k in kids):
                return self.json({"errors": [_problem(None, "kids", "each a key id: 22 characters of base64url")]},
                                 status=400)
            done, refusal = await self._keys(lambda conn: data_keys.load_kids(conn, kids))
            if not done:
                return refusal
            out: dict[str, str | None] = {}
            for kid in kids:
                key = data_keys.loaded(kid)
                if key is not None:
                    out[kid] = base64.b64encode(key.raw).decode() if key.raw else None
            return self.json({"keys": out})

    @app.page("/v1/accounts/{account_id}/erasure")
    class Erasure(faust.web.View):
        async def get(self, request: Any, account_id: str) -> Any:
            if (problem := _id_problem(account_id)) is not None:
                return self.json({"errors": [_problem(None, "account_id", problem)]}, status=400)
            try:
                statuses = await db.run("erasure query", lambda conn: erasure_status(
                    conn, pipeline.context.keys, account_id))
            except Exception as exc:
                log.warning("erasure query failed: %s", describe(exc))
                return self.json({"error": "database unavailable"}, status=503)
            if not statuses:
                return self.json({"erasures": [], "error": "no erasure for this account"}, status=404)
            now = pipeline.clock.now_ms()
            for status in statuses:
                status["overdue"] = status["state"] == "open" and status["deadline"] < now
                for key in ("opened_at", "deadline", "completed_at", "keys_destroyed_at"):
                    status[key] = _iso(status[key]) if status[key] is not None else None
                for store in status["stores"]:
                    for key in ("acknowledged_at", "verified_at"):
                        store[key] = _iso(store[key]) if store[key] else None
            return self.json({"erasures": statuses})

    access_db = Database(settings.postgres_dsn or "")  # opening a request writes: the worker's role

    @app.page("/v1/accounts/{account_id}/export")
    class Export(faust.web.View):
        async def get(self, request: Any, account_id: str) -> Any:
            """The account's access archive (docs/access.md): the first call opens the request,
            202 while the stores answer, 200 with the zip once every store has."""
            if (problem := _id_problem(account_id)) is not None:
                return self.json({"errors": [_problem(None, "account_id", problem)]}, status=400)
            try:
                state = await access_db.run("access request", lambda conn: open_access(
                    conn, pipeline.context, account_id))
            except Exception as exc:
                log.warning("access request failed: %s", describe(exc))
                return self.json({"error": "database unavailable"}, status=503)
            if state is None:
                return self.json({"error": "no such account"}, status=404)
            archive = state.pop("archive")
            if archive is None:
                return self.json(state, status=202, headers={"Retry-After": "5"})
            return self.bytes(archive, content_type="application/zip", headers={
                "Content-Disposition": f'attachment; filename="access-{state["request_id"]}.zip"',
                "X-Archive-SHA256": state["archive_sha256"]})

    @app.page("/v1/subjects/{subject_id}/consent")
    class Consent(faust.web.View):
        async def get(self, request: Any, subject_id: str) -> Any:
            at_raw = request.query.get("at")
            now = pipeline.clock.now_ms()
            if at_raw is not None:
                try:
                    now = int(at_raw)
                except ValueError:
                    return self.json({"errors": [_problem(None, "at", "epoch milliseconds expected")]}, status=400)
            if (problem := _id_problem(subject_id)) is not None:
                return self.json({"errors": [_problem(None, "subject_id", problem)]}, status=400)
            try:
                state, receipts = await db.run("consent query", lambda conn: _consent_with_receipts(conn, subject_id,
                                                                                                     now))
            except Exception as exc:
                log.warning("consent query failed: %s", describe(exc))
                return self.json({"error": "database unavailable"}, status=503)
            subject = state[subject_id]
            return self.json({
                "subject_id": subject_id,
                "as_of": _iso(now),
                "purposes": {
                    p["purpose"]: {
                        "granted": p["granted"],
                        "given_at": _iso(p["given_at"]),
                        "expires_at": _iso(p["expires_at"]) if p["expires_at"] else None,
                        "policy_version": p["policy_version"],
                    }
                    for p in subject["purposes"]
                },
                "newsletter": subject["newsletter"],
                "receipts": receipts,  # docs/consent.md#receipts
            })

    async def _consent_with_receipts(conn: Any, subject_id: str, now: int) -> tuple[Any, Any]:
        return (await consent_state(conn, [subject_id], now),
                await consent_receipts(conn, subject_id, now, pipeline.context.policy))


def _id_problem(value: str) -> str | None:
    """Why an identifier from a path cannot be one (parsed here, never passed on to the database)."""
    if not 0 < len(value) <= 256:
        return "1 to 256 characters"
    if not value.isprintable():
        return "contains a control character"
    return text_problem(value)


def _iso(ms: int) -> str:
    return ms_to_dt(ms).isoformat().replace("+00:00", "Z") if ms is not None else ""


