"""The console's pages (docs/console.md), registered on the worker's web server by the shell
(`lifecycle worker`): read-only, server-rendered, no script. The routes and what each answers are
declared in streams/http/routes.py (CONSOLE_ROUTES), like every other route."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import logging
import os
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust

from lifecycle import proofs
from lifecycle.console import queries
from lifecycle.console.charts import bars
from lifecycle.console.page import CSS, HEADERS, esc, layout, table, when
from lifecycle.console.sessions import COOKIE, SESSION_S, close_session, open_session, session_alive
from lifecycle.core.pgroles import component_dsn
from lifecycle.core.timeutil import ms_to_dt
from lifecycle.streams.http.auth import BodyTooLarge, BodyTooSlow, load_tokens, read_body
from lifecycle.streams.pipeline import Pipeline
from lifecycle.streams.runtime.database import Database, describe

__all__ = ["register_console"]

log = logging.getLogger("lifecycle.console")
_FORM_CAP = 8192
_BUCKETS = ((60, "< 1 min"), (600, "< 10 min"), (3600, "< 1 h"), (86400, "< 1 day"), (7 * 86400, "< 7 days"),
            (30 * 86400, "< 30 days"), (float("inf"), "≥ 30 days"))

Page = Callable[[Any, Any], Awaitable[Any]]


def register_console(pipeline: Pipeline) -> None:
    """Every console page on the pipeline's web server."""
    Console(pipeline).register()


class Console:
    def __init__(self, pipeline: Pipeline):
        self.pipeline, self.settings = pipeline, pipeline.settings
        self.reader = Database(component_dsn(self.settings, "reader"))  # every read: SELECT and nothing more
        self.sessions = Database(self.settings.postgres_dsn or "")
        self.tokens = load_tokens(self.settings)
        self.secure = bool(os.environ.get("LIFECYCLE_CONSOLE_SECURE_COOKIE"))  # set behind a TLS proxy

    # -- responses ---------------------------------------------------------------------------------

    def html(self, web: Any, body: str, status: int = 200, headers: dict[str, str] | None = None) -> Any:
        return web.html(body, status=status, headers={**HEADERS, **(headers or {})})

    def see_other(self, web: Any, where: str) -> Any:
        return web.html("", status=303, headers={**HEADERS, "Location": where})

    async def signed_in(self, request: Any) -> bool:
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return False
        try:
            return await self.sessions.run("console session", lambda conn: session_alive(
                conn, cookie, dt.datetime.now(dt.UTC)))
        except Exception as exc:
            log.warning("console session check failed: %s", describe(exc))
            return False

    def guarded(self, page: Page) -> Page:
        """A page for signed-in people only; the others go to the sign-in form."""
        async def view(web: Any, request: Any) -> Any:
            if not await self.signed_in(request):
                return self.see_other(web, "/console/sign-in")
            try:
                return await page(web, request)
            except Exception as exc:  # never a traceback in a page
                log.warning("console page %s failed: %s", request.path, describe(exc))
                return self.html(web, layout("Unavailable", "<p>The database could not be read; try again.</p>"),
                                 status=503)
        return view

    async def form(self, request: Any) -> dict[str, str] | None:
        try:
            body = await read_body(request, _FORM_CAP, self.settings.http_body_timeout_s)
            fields = urllib.parse.parse_qs(body.decode("utf-8"), max_num_fields=8, strict_parsing=False)
        except (BodyTooLarge, BodyTooSlow, UnicodeDecodeError, ValueError):
            return None
        return {k: v[0] for k, v in fields.items() if v}

    # -- registration -----------------------------------------------------------------------------

    def register(self) -> None:
        app, console = self.pipeline.app, self

        @app.page("/console/console.css")
        async def stylesheet(web: Any, request: Any) -> Any:
            return web.text(CSS, content_type="text/css", headers=dict(HEADERS))

        @app.page("/console/sign-in")
        class SignIn(faust.web.View):
            async def get(self, request: Any) -> Any:
                return console.html(self, console.sign_in_form(""))

            async def post(self, request: Any) -> Any:
                return await console.sign_in(self, request)

        @app.page("/console/sign-out")
        class SignOut(faust.web.View):
            async def post(self, request: Any) -> Any:
                cookie = request.cookies.get(COOKIE)
                try:
                    await console.sessions.run("console sign-out", lambda conn: close_session(conn, cookie))
                except Exception as exc:
                    log.warning("console sign-out failed: %s", describe(exc))
                response = console.see_other(self, "/console/sign-in")
                response.del_cookie(COOKIE, path="/console")
                return response

        @app.page("/console")
        class Overview(faust.web.View):
            get = console.guarded(lambda web, request: console.overview(web))

        @app.page("/console/erasures")
        class Erasures(faust.web.View):
            get = console.guarded(lambda web, request: console.erasures(web, request, lookup=None))
            post = console.guarded(console.erasures_lookup)

        @app.page("/console/erasures/{request_id}")
        class Erasure(faust.web.View):
            async def get(self, request: Any, request_id: str) -> Any:
                return await console.guarded(lambda web, r: console.erasure(web, request_id))(self, request)

        @app.page("/console/erasures/{request_id}/certificate")
        class Certificate(faust.web.View):
            async def get(self, request: Any, request_id: str) -> Any:
                return await console.guarded(lambda web, r: console.certificate(web, request_id))(self, request)

        @app.page("/console/records")
        class Records(faust.web.View):
            get = console.guarded(lambda web, request: console.records(web))

        @app.page("/console/consent")
        class Consent(faust.web.View):
            get = console.guarded(lambda web, request: console.consent(web, None))
            post = console.guarded(console.consent_lookup)

    # -- sign-in ----------------------------------------------------------------------------------

    def sign_in_form(self, problem: str) -> str:
        note = f"<p class=warn role=alert>{esc(problem)}</p>" if problem else ""
        return layout("Sign in", f"{note}<form method=post action=/console/sign-in><label>A token of scope read"
                                 "<input type=password name=token autocomplete=off required></label> "
                                 "<button type=submit>Sign in</button></form>"
                                 "<p>The token is exchanged for a session cookie that lasts "
                                 f"{SESSION_S // 3600} hours; it is not kept.</p>", signed_in=False)

    async def sign_in(self, web: Any, request: Any) -> Any:
        fields = await self.form(request)
        if fields is None:
            return self.html(web, self.sign_in_form("That was not a sign-in form."), status=400)
        token = fields.get("token", "").strip()
        scopes = self.tokens.scopes_of(token) if token.isascii() else None
        if not scopes or "read" not in scopes:
            self.pipeline.metrics.http_refused.labels("unauthorized").inc()
            return self.html(web, self.sign_in_form("Not a token of scope read."), status=401)
        try:
            cookie, expires = await self.sessions.run("console sign-in", lambda conn: open_session(
                conn, dt.datetime.now(dt.UTC)))
        except Exception as exc:
            log.warning("console sign-in failed: %s", describe(exc))
            return self.html(web, self.sign_in_form("The database is unavailable; try again."), status=503)
        response = self.see_other(web, "/console")
        response.set_cookie(COOKIE, cookie, max_age=SESSION_S, expires=expires.strftime("%a, %d %b %Y %H:%M:%S GMT"),
                            path="/console", httponly=True, samesite="Strict", secure=self.secure)
        return response

    # -- pages ------------------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        return ms_to_dt(max(self.pipeline.clock.now_ms(), 0))

    async def overview(self, web: Any) -> Any:
        now = self.now()
        data, seconds, days = await self.reader.run("console overview", lambda conn: _three(
            queries.overview(conn, now), queries.time_to_proof(conn), queries.per_day(conn, now)))
        figures = (("Erasures open", data["open"], ""),
                   ("Overdue", data["overdue"], "warn" if data["overdue"] else ""),
                   ("Regressed", data["regressed"], "warn" if data["regressed"] else ""),
                   ("Replaying", data["replaying"], ""), ("Complete", data["complete"], "ok"),
                   ("Access requests open", len(data["access"]), ""))
        cards = "".join(f"<div class=card><span>{esc(label)}</span><b class={cls}>{value}</b></div>"
                        for label, value, cls in figures)
        access = table(("request", "opened", "deadline (Art. 12(3))", ""),
                       ((f"<code>{esc(r)}</code>", esc(when(o)), esc(when(d)),
                         "<span class=warn>overdue</span>" if d < now else "") for r, o, d in data["access"]),
                       empty="No access request is open.")
        stores = table(("store", "waited for", "joined by", "orders not answered", "failed", "last answer"),
                       ((esc(s), "yes" if active else "no", esc(origin), str(pending),
                         f"<span class=warn>{failed}</span>" if failed else "0", esc(when(last)))
                        for s, active, origin, pending, last, failed in data["stores"]))
        counts = [sum(1 for s in seconds if (prev if i else -1) <= s < limit)
                  for i, ((limit, _), prev) in enumerate(zip(_BUCKETS, [0, *[b[0] for b in _BUCKETS]], strict=False))]
        body = (f"<p>As of {esc(when(now))} (the pipeline's clock).</p><div class=cards>{cards}</div>"
                f"<h2>Access requests open</h2>{access}<h2>Stores</h2>{stores}"
                f"<h2>Refused and dead-lettered (since this worker started)</h2>{self.refusals()}"
                "<h2>Time from closure to proof</h2>"
                + bars("Completed erasures by time from closure to proof", [b[1] for b in _BUCKETS], counts)
                + "<h2>Erasures opened per day (last 30 days)</h2>"
                + bars("Erasures opened per day", [d.strftime("%m-%d") for d, _ in days], [n for _, n in days]))
        return self.html(web, layout("Overview", body, active="/console"))

    def refusals(self) -> str:
        rows: dict[tuple[str, str], float] = {}
        for family in self.pipeline.metrics.registry.collect():
            if family.name not in ("lifecycle_events_rejected", "lifecycle_dead_letters_written"):
                continue
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value:
                    what = "dead letters on " + sample.labels.get("topic", "") if "topic" in sample.labels else \
                        f"{sample.labels.get('source', '')}: {sample.labels.get('reason', '')}"
                    rows[(family.name, what)] = rows.get((family.name, what), 0) + sample.value
        return table(("what", "count"), ((esc(w), str(int(v))) for (_, w), v in sorted(rows.items())),
                     empty="Nothing refused.")

    async def erasures(self, web: Any, request: Any, lookup: tuple[str, ...] | None) -> Any:
        query = request.query
        try:
            filters = queries.Filters(
                state=_choice(query.get("state", ""), ("", "open", "complete", "regressed", "replaying"), "state"),
                store=query.get("store", "")[:64], overdue=query.get("overdue", "") == "1",
                since=_day(query.get("from", ""), "from"), until=_day(query.get("to", ""), "to"), hashes=lookup or ())
        except ValueError as exc:
            return self.html(web, layout("Erasures", f"<p class=warn role=alert>{esc(exc)}</p>"), status=400)
        now = self.now()
        rows = await self.reader.run("console erasures", lambda conn: queries.erasures(conn, filters, now))
        found = table(("request", "account (keyed hash)", "state", "opened", "deadline", "completed", "waiting for"),
                      ((f'<a href="/console/erasures/{esc(rid)}"><code>{esc(rid)}</code></a>',
                        f"<code>{esc(h[:16])}…</code>",
                        esc(state) + (" <span class=warn>overdue</span>" if late else ""), esc(when(o)),
                        esc(when(d)), esc(when(c)), esc(pending or "–"))
                       for rid, h, state, o, d, c, late, pending in rows),
                      caption=f"{len(rows)} erasure(s), newest first (at most 200)", empty="No erasure matches.")
        body = (self.filter_form(filters)
                + "<form method=post action=/console/erasures class=filters><label>Look up an account by its id "
                  "(matched by keyed hash; the id is neither shown nor kept)<input name=id autocomplete=off "
                  "maxlength=256></label><button type=submit>Look up</button></form>"
                + found)
        return self.html(web, layout("Erasures", body, active="/console/erasures"))

    def filter_form(self, f: queries.Filters) -> str:
        def option(value: str, label: str) -> str:
            return f'<option value="{value}"{" selected" if f.state == value else ""}>{label}</option>'
        states = "".join(option(v, v or "any") for v in ("", "open", "complete", "regressed", "replaying"))
        return ("<form method=get action=/console/erasures class=filters>"
                f"<label>State<select name=state>{states}</select></label>"
                f"<label>Waiting for store<input name=store value=\"{esc(f.store)}\" maxlength=64></label>"
                f"<label>Opened from<input type=date name=from value=\"{esc(f.since or '')}\"></label>"
                f"<label>to<input type=date name=to value=\"{esc(f.until or '')}\"></label>"
                f"<label><span>Overdue only</span><input type=checkbox name=overdue value=1"
                f"{' checked' if f.overdue else ''}></label><button type=submit>Filter</button></form>")

    async def erasures_lookup(self, web: Any, request: Any) -> Any:
        fields = await self.form(request)
        account = (fields or {}).get("id", "").strip()
        if fields is None or not account or len(account) > 256 or not account.isprintable():
            return self.html(web, layout("Erasures", "<p class=warn role=alert>Give an account id.</p>"), status=400)
        hashes = tuple(self.pipeline.context.keys.candidates(account))
        return await self.erasures(web, request, lookup=hashes)

    async def erasure(self, web: Any, request_id: str) -> Any:
        rid = _uuid(request_id)
        if rid is None:
            return self.html(web, layout("No such erasure", "<p>Not a request id.</p>"), status=404)
        record = await self.reader.run("console erasure", lambda conn: queries.erasure(conn, rid))
        if record is None:
            return self.html(web, layout("No such erasure", "<p>No erasure has this request id.</p>"), status=404)
        cert = await self.reader.run("console certificate", lambda conn: queries.certificate(conn, rid))
        body = (table(("request", "account (keyed hash)", "reason", "state", "deadline", "legal hold"),
                      [(f"<code>{esc(record['request_id'])}</code>", f"<code>{esc(record['account_hash'])}</code>",
                        esc(record["reason"]), esc((record["proof"] or {}).get("state") or record["state"]),
                        esc(when(record["deadline"])), "yes" if record["legal_hold"] else "no")])
                + "<h2>Timeline</h2><ol class=timeline>"
                + "".join(f"<li><time>{esc(when(at))}</time> {text}</li>" for at, text in _timeline(record))
                + "</ol><h2>Stores</h2>"
                + table(("store", "status", "items erased", "orders sent", "acknowledged", "verified", "items found",
                         "error"),
                        ((esc(s), esc(st), str(n), str(att), esc(when(ack)), esc(when(ver)), str(found), esc(err or ""))
                         for s, st, n, att, _, ack, err, ver, found in record["stores"]))
                + "<h2>Certificate</h2>" + self.certificate_part(record, cert))
        return self.html(web, layout(f"Erasure {record['request_id']}", body, active="/console/erasures"))

    def certificate_part(self, record: dict[str, Any], cert: bytes | None) -> str:
        rid = esc(record["request_id"])
        if cert is None:
            return (f"<p>Not issued yet. Once the erasure is complete, <code>lifecycle proof export {rid}</code> "
                    "issues it (where the proof key is kept) and it appears here.</p>")
        verdict = self.verify(cert)
        return (f"<p>{verdict}</p><p><a href=\"/console/erasures/{rid}/certificate\" download>Download the "
                f"certificate</a> (issued {esc(when(record['certificate_issued_at']))}); an auditor checks it "
                f"offline with <code>lifecycle proof verify FILE --public-key KEY --store-keys STORES</code>.</p>")

    def verify(self, cert: bytes) -> str:
        """The certificate checked as an auditor would: the signature against the published proof
        key (LIFECYCLE_PROOF_TRUST_FILE) and each store's receipts against its registered key."""
        trust_file = os.environ.get("LIFECYCLE_PROOF_TRUST_FILE")
        try:
            trusted = Path(trust_file).read_text().strip() if trust_file else None
        except OSError:
            trusted = None
        stores = {s: base64.b64encode(k.public).decode() for s, k in self.pipeline.acks.ack_keys.keys.items()
                  if k.public is not None}
        try:
            body = proofs.verify(cert, trusted, trust_embedded=trusted is None)
            lines = proofs.verify_stores(body, stores)
        except proofs.SignerUnverified as exc:
            return f"<span class=warn>Not fully verified:</span> {esc(exc)}"
        except proofs.ProofRefused as exc:
            return f"<span class=warn>Refused:</span> {esc(exc)}"
        signer = "the published proof key" if trusted else "the key inside the file (no published key configured)"
        return (f"<span class=ok>Verified</span>: signed by {esc(signer)}; "
                + "; ".join(esc(line) for line in lines) + ".")

    async def certificate(self, web: Any, request_id: str) -> Any:
        rid = _uuid(request_id)
        cert = None if rid is None else \
            await self.reader.run("console certificate", lambda conn: queries.certificate(conn, rid))
        if cert is None:
            return self.html(web, layout("No certificate", "<p>No certificate was issued for this erasure.</p>"),
                             status=404)
        return web.bytes(cert, content_type="application/json", headers={
            **HEADERS, "Content-Disposition": f'attachment; filename="certificate-{rid}.json"'})

    async def records(self, web: Any) -> Any:
        from lifecycle.records import build_record, load_processing, registered_stores, to_markdown
        from lifecycle.schemas.catalog import load_catalog
        from lifecycle.schemas.personal import datamap

        # The worker's stores (the shipped ones and those that had joined when it started).
        stores = registered_stores(dataclasses.replace(self.settings, postgres_dsn=None))
        record = build_record(self.settings, stores, load_processing())
        fields = datamap(load_catalog(), self.pipeline.context.policy)
        body = ("<h2>Data map: every personal field</h2>"
                + table(("topic", "record", "field", "category", "retention"),
                        ((esc(f["topic"]), esc(f["record"]), esc(f["field"]), esc(f["category"]), esc(f["retention"]))
                         for f in fields))
                + "<h2>Record of processing (GDPR Art. 30)</h2><pre>" + esc(to_markdown(record)) + "</pre>")
        return self.html(web, layout("Record of processing", body, active="/console/records"))

    async def consent(self, web: Any, found: str | None) -> Any:
        form = ("<form method=post action=/console/consent class=filters><label>Account or visitor id (neither "
                "shown nor kept)<input name=id autocomplete=off maxlength=256></label>"
                "<button type=submit>Show receipts</button></form>")
        return self.html(web, layout("Consent receipts", form + (found or ""), active="/console/consent"))

    async def consent_lookup(self, web: Any, request: Any) -> Any:
        from lifecycle.streams.consent.processor import consent_state
        from lifecycle.streams.consent.receipts import consent_receipts

        fields = await self.form(request)
        subject = (fields or {}).get("id", "").strip()
        if fields is None or not subject or len(subject) > 256 or not subject.isprintable():
            return self.html(web, layout("Consent receipts", "<p class=warn role=alert>Give an id.</p>"), status=400)
        now = self.pipeline.clock.now_ms()

        async def read(conn: Any) -> tuple[Any, Any]:
            return (await consent_state(conn, [subject], now),
                    await consent_receipts(conn, subject, now, self.pipeline.context.policy))

        state, receipts = await self.reader.run("console consent", read)
        purposes = table(("purpose", "granted", "given", "expires", "policy version"),
                         ((esc(p["purpose"]), "yes" if p["granted"] else "no", esc(when(ms_to_dt(p["given_at"]))),
                           esc(when(ms_to_dt(p["expires_at"])) if p["expires_at"] else "–"), esc(p["policy_version"]))
                          for p in state[subject]["purposes"]), empty="No consent recorded.")
        # The receipts as the person would be given them, less the id asked for (the page shows no id).
        shown = [{k: v for k, v in r.items() if k != "subject_id"} for r in receipts]
        body = (f"<h2>Current consent</h2>{purposes}<p>Newsletter: "
                f"{'subscribed' if state[subject]['newsletter'] else 'not subscribed'}</p>"
                f"<h2>Receipts</h2><pre>{esc(json.dumps(shown, indent=2, default=str))}</pre>")
        return await self.consent(web, body)


async def _three(a: Awaitable[Any], b: Awaitable[Any], c: Awaitable[Any]) -> tuple[Any, Any, Any]:
    return await a, await b, await c


def _uuid(text: str) -> uuid.UUID | None:
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    return value if str(value) == text else None


def _choice(value: str, allowed: tuple[str, ...], field: str) -> str:
    if value not in allowed:
        raise ValueError(f"{field}: one of {', '.join(a or 'any' for a in allowed)}")
    return value


def _day(value: str, field: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{field}: a day as YYYY-MM-DD") from None


def _timeline(r: dict[str, Any]) -> list[tuple[dt.datetime, str]]:
    """What happened to one erasure, step by step (no personal data). Steps in the protocol's
    order, by time within a step: the request's own times are event time (the pipeline's clock),
    the stores' answers the database's, so a plain sort by time could put "complete" first."""
    steps: list[tuple[int, dt.datetime | None, str]] = [
        (0, r["opened_at"], f"opened ({esc(r['reason'])})" + (", under legal hold" if r["legal_hold"] else "")),
        (1, r["keys_destroyed_at"], "data keys destroyed (crypto-shredding)"),
        (4, r["verify_issued_at"], "every store asked to verify"),
        (6, r["completed_at"], "<span class=ok>complete</span>: every store erased and verified"),
        (7, r["certificate_issued_at"], "certificate issued"),
    ]
    if r["round"]:
        steps.append((1, r["opened_at"], f"round {r['round']}: erased again after a later check found data"))
    if (ext := r.get("extension")) is not None:
        steps.append((0, ext["extended_at"], f"deadline extended by {ext['months']} month(s) (Art. 12(3)), from "
                                             f"{esc(when(ext['previous_deadline']))}: {esc(ext['reason'])} "
                                             f"(decided by {esc(ext['requested_by'])}; the person is told)"))
    for store, status, items, attempts, issued, acked, error, verified, found in r["stores"]:
        steps.append((2, issued, f"order to <b>{esc(store)}</b> (sent {attempts} time(s))"))
        steps.append((3, acked, f"<b>{esc(store)}</b> answered {esc(status)}, {items} item(s) erased"
                                + (f": {esc(error)}" if error else "")))
        steps.append((5, verified, f"<b>{esc(store)}</b> verified: {found} item(s) left"))
    proof = r["proof"] or {}
    if proof.get("regressed_at"):
        steps.append((8, proof["regressed_at"], f"<span class=warn>regressed</span>: found again "
                                                f"({proof['regressions']} time(s))"))
    if proof.get("replayed_at"):
        steps.append((8, proof["replayed_at"], f"replayed on a restored store ({proof['replays']} replay(s) "
                                               "found data)"))
    if proof.get("last_verified_at"):
        steps.append((8, proof["last_verified_at"], "checked again later: clean"))
    timed = [(step, at, text) for step, at, text in steps if at is not None]
    return [(at, text) for _, at, text in sorted(timed, key=lambda s: (s[0], s[1]))]
