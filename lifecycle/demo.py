"""`lifecycle demo`: the pipeline on the embedded stack, driven by simulated upstream services.

Deterministic traffic (seeded), a few records that are deliberately broken the way real
producers break them, and a report read back from the pipeline itself (its /metrics and the
dead-letters topic), never from what the demo believes it sent.
"""

from __future__ import annotations

import dataclasses
import json
import random
import struct
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from prometheus_client.parser import text_string_to_metric_families

from lifecycle.connectors.emitter import Emitter
from lifecycle.core.config import Settings
from lifecycle.supervisor import console_hint, http_get, running_pipeline

__all__ = ["run_demo", "simulate", "scrape", "DEMO_EPOCH_MS"]

DEMO_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: simulated time starts here
BROWSERS = ["firefox", "chrome", "safari", "edge"]
OSES = ["linux", "windows", "macos", "ios", "android"]
SEEDED_OPEN = 200  # accounts that stay open and get documents and a cache entry too
SEND_BATCH = 2000  # events per emit_many: one key request each
MIME = ["application/pdf", "image/png", "text/csv", "application/zip"]


def _event(event_type: str, at: int, source: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "event_type": event_type,
            "occurred_at": at, "source": source, **fields}


def closes(i: int) -> bool:
    """Whether the simulated account number ``i`` asks for its closure on day one."""
    return i % 40 == 11


def simulate(accounts: int, visitors: int, seed: int = 7, tag: str = "") -> Iterator[dict[str, Any]]:
    """A day of upstream traffic: registrations (a fifth never verified), sessions with file
    uploads (some never ended: the idle timeout closes them), cookie consents given and
    withdrawn, newsletter subscriptions and unsubscriptions, restrictions, closures, and page
    views concentrated enough that some hourly buckets reach k visitors. Per-subject order."""
    random.seed(seed)
    t = DEMO_EPOCH_MS
    for i in range(accounts):
        acc = f"acc-{tag}{i:05d}"
        at = t + i * 1000
        yield _event("account.registered", at, "signup", account_id=acc, email=f"user{i:05d}@example.com",
                     first_name=f"Given{i}", last_name=f"Family{i}", phone=f"+3360000{i:04d}")
        if i % 5:
            yield _event("account.email_verified", at + 60_000, "signup", account_id=acc)
        yield _event("consent.cookies_granted", at + 61_000, "web", account_id=acc,
                     purposes=["necessary", "analytics"] if i % 3 else ["necessary"], policy_version="2026-01")
        if i % 4 == 0:
            yield _event("consent.newsletter_subscribed", at + 62_000, "web", account_id=acc)
        if i % 16 == 0:
            yield _event("consent.newsletter_unsubscribed", at + 63_000, "web", account_id=acc)
        if i % 10 == 7:
            yield _event("consent.cookies_withdrawn", at + 64_000, "web", account_id=acc,
                         purposes=["analytics"], policy_version="2026-01")
        sid = f"sess-{tag}{i:05d}"
        yield _event("session.started", at + 120_000, "auth", account_id=acc, session_id=sid,
                     ip=f"203.0.113.{i % 250}", domain="app.centermetrics.test", user_agent="demo",
                     browser=random.choice(BROWSERS), os=random.choice(OSES), login_method="password",
                     second_factor="totp" if i % 2 else None)
        for f in range(i % 4):
            yield _event("session.file_transferred", at + 130_000 + f * 1000, "files", account_id=acc,
                         session_id=sid, mime_type=random.choice(MIME), size_bytes=random.randint(1_000, 5_000_000))
        if i % 7:
            yield _event("session.ended", at + 600_000, "auth", account_id=acc, session_id=sid, reason="logout")
        if i % 9 == 4:
            yield _event("session.login_failed", at + 700_000, "auth", account_id=acc, ip=f"192.0.2.{i % 250}",
                         failure_reason="bad_password")
        if i % 25 == 3:
            yield _event("account.processing_restricted", at + 800_000, "privacy", account_id=acc)
        if i % 80 == 11:  # a dispute: what the hold covers outlives the closure until it is released
            yield _event("account.legal_hold_set", at + 850_000, "legal", account_id=acc)
        if closes(i):
            yield _event("account.closure_requested", at + 900_000, "billing", account_id=acc, via="billing_contact")
            yield _event("account.closed", at + 901_000, "billing", account_id=acc)
    for v in range(visitors):
        vis = f"vis-{tag}{v:05d}"
        at = t + v * 500
        if v % 6:
            yield _event("consent.cookies_granted", at, "web", visitor_id=vis,
                         purposes=["necessary", "analytics"], policy_version="2026-01")
        for p in range(3):
            yield _event("analytics.page_viewed", at + 60_000 + p * 10_000, "web", visitor_id=vis, path=f"/p/{p}",
                         referrer_domain="search.test", browser=random.choice(BROWSERS[:2]), os="linux",
                         mime_type="text/html", country=random.choice(["FR", "DE"]))


def thirteen_months_later(tag: str = "") -> Iterator[dict[str, Any]]:
    """Traffic 13 months and a day after the start: the event-time clock moves with it, so every
    consent given on day one lapses and every session left open times out."""
    from lifecycle.core.timeutil import add_months

    at = add_months(DEMO_EPOCH_MS, 13) + 86_400_000
    yield _event("consent.cookies_granted", at, "web", visitor_id=f"vis-{tag}late",
                 purposes=["necessary", "analytics"], policy_version="2027-02")
    yield _event("account.legal_hold_released", at + 1000, "legal", account_id=f"acc-{tag}00011")


def broken_records(emitter: Emitter, tag: str = "") -> list[tuple[str, bytes]]:
    """What real producers get wrong: JSON instead of Avro, an unknown schema id, a cut body."""
    valid = emitter.codec.encode_event(
        _event("session.login_failed", DEMO_EPOCH_MS, "auth", account_id=f"acc-{tag}00000", ip="198.51.100.1",
               domain=None, user_agent=None, failure_reason="bad_password")
    )
    return [
        ("session-events", b'{"event_type": "session.started"}'),
        ("session-events", b"\x00" + struct.pack(">I", 999_999) + valid[5:]),
        ("session-events", valid[: len(valid) // 2]),
    ]


def scrape(settings: Settings) -> dict[str, float]:
    """The pipeline's own counters, as ``name{labels}`` -> value."""
    status, body = http_get(f"http://{settings.http_host}:{settings.http_port}/metrics")
    if status != 200:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def save_metrics(live: Settings) -> Path:
    """Every /metrics endpoint of the run (the worker's and each connector's, from the scrape
    targets file), as served, into ``<state>/demo-metrics.txt``."""
    urls = [f"http://{live.http_host}:{live.http_port}/metrics"]
    targets = live.state_dir / "scrape-targets.json"
    if targets.exists():
        urls += [f"http://{t}/metrics" for g in json.loads(targets.read_text())[1:] for t in g["targets"]]
    parts = []
    for url in urls:
        try:
            status, body = http_get(url)
        except OSError:
            continue
        if status == 200:
            parts.append(f"# scraped from {url}\n{body.decode()}")
    path = live.state_dir / "demo-metrics.txt"
    path.write_text("".join(parts))
    return path


def total(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(name + "{"))


def handled(metrics: dict[str, float]) -> float:
    """Valid events the worker is done with: applied, or suppressed because their account is erased."""
    return total(metrics, "lifecycle_events_ingested_total") + total(metrics, "lifecycle_events_suppressed_total")


def run_demo(settings: Settings, say: Callable[[str], None], *, accounts: int = 200, visitors: int = 300,
             deadline_s: float = 180, serve_s: int = 0) -> int:
    started = time.monotonic()
    # The demo moves time by months: the clock follows event time (docs/processors.md).
    settings = dataclasses.replace(settings, clock="event")
    tag = ""
    if settings.kafka_bootstrap is None and settings.postgres_dsn is None:
        settings = _fresh_demo_state(settings, say)
    else:
        # Servers of yours: this run's subjects get ids of their own, apart from earlier runs.
        tag = f"{uuid.uuid4().hex[:4]}-"
    with running_pipeline(settings, say) as (live, _stack):
        _seed_stores(live, accounts, say, tag)
        say(f"simulating {accounts} accounts and {visitors} visitors (day one: 2026-01-01)")
        progress = ProgressLine(say)
        sent = _send(live, simulate(accounts, visitors, tag=tag), progress, "day one")
        with Emitter(live) as emitter:
            bad = broken_records(emitter, tag)
            for topic, value in bad:
                emitter.send_raw(live.topic(topic), f"acc-{tag}00000".encode(), value)
        _wait(live, progress, deadline_s, f"day one ({sent} events sent)",
              lambda m: handled(m) >= sent and total(m, "lifecycle_events_rejected_total") >= len(bad))
        say("advancing the clock by 13 months and a day")
        sent += _send(live, thirteen_months_later(tag), progress, "13 months later")
        _wait(live, progress, deadline_s, "13 months later (erasures, lapses, retention)",
              lambda m: handled(m) >= sent
              and total(m, "lifecycle_consents_expired_total") > 0
              and m.get("lifecycle_open_sessions{}", 1) == 0
              and total(m, "lifecycle_erasure_requests_completed_total")
              >= total(m, "lifecycle_erasure_requests_opened_total")
              and total(m, "lifecycle_retention_items_deleted_total") > 0, _later_counts)
        time.sleep(1.5)  # one more tick and relay round, so the report reads settled tables
        ok = _report(live, scrape(live), sent, len(bad), say)
        _record_of_processing(live, say)
        ok = _access_export(live, say, tag) and ok
        _certificates(live, say)
        say(f"metrics of every process saved to {save_metrics(live)}")
        say(f"demo finished in {time.monotonic() - started:.1f} s")
        if serve_s > 0:
            say(f"{console_hint(live)}; the pipeline keeps serving it for {serve_s // 60} min {serve_s % 60} s "
                "(Ctrl-C stops sooner)")
            try:
                time.sleep(serve_s)
            except KeyboardInterrupt:
                say("stopping")
        else:
            say(f"to browse it: LIFECYCLE_STATE_DIR={live.state_dir} lifecycle up, then the {console_hint(live)}")
    return 0 if ok else 1


def _fresh_demo_state(settings: Settings, say: Callable[[str], None]) -> Settings:
    """Every embedded demo starts from nothing, in ``<state>/demo`` (the simulated day is the same
    each time, so a database kept from an earlier run would see every event as already applied)."""
    import shutil

    from lifecycle.core.errors import StackError
    from lifecycle.embedded.process import Ledger

    state = settings.state_dir / "demo"
    try:
        Ledger(state / "run" / "ledger.json").reap_leftovers()
    except RuntimeError as exc:
        raise StackError(str(exc)) from None
    if state.exists():
        shutil.rmtree(state)
        say(f"cleared the previous demo's state in {state}")
    return dataclasses.replace(settings, state_dir=state)


def _seed_stores(live: Settings, accounts: int, say: Callable[[str], None], tag: str = "") -> None:
    """What the product itself keeps outside the pipeline: documents and a cache entry in Redis of
    every account that closes (the erasure connectors must find and delete these) and of the first
    SEEDED_OPEN accounts (what stays, and what an access export finds). Not of every account: on a
    busy disk, 80,000 files and folders took longer than the rest of the demo."""
    seeded = [f"acc-{tag}{i:05d}" for i in range(accounts) if i < SEEDED_OPEN or closes(i)]
    for account in seeded:
        folder = live.files_dir / account
        (folder / "documents").mkdir(parents=True, exist_ok=True)
        (folder / "documents" / "report.csv").write_text("quarter,revenue\nQ1,100\n")
        (folder / "settings.json").write_text('{"theme": "dark"}')
    if live.redis_url:
        import redis

        client = redis.Redis.from_url(live.redis_url)
        with client.pipeline() as pipe:
            for account in seeded:
                pipe.set(f"cache:{{{account}}}:profile", "cached")
                pipe.sadd("lifecycle:index:active", account)
            pipe.execute()
        client.close()
    say(f"seeded documents for {len(seeded)} accounts (every one that closes, and the first {SEEDED_OPEN})"
        + (" and their Redis cache entries" if live.redis_url else ""))


class ProgressLine:
    """One status line rewritten in place on a terminal; into a log or a pipe, where nothing can be
    rewritten, the same text once every ``every_s`` seconds."""

    def __init__(self, say: Callable[[str], None], stream: TextIO | None = None, every_s: float = 10.0):
        self.say, self.stream, self.every_s = say, stream or sys.stdout, every_s
        self.tty = self.stream.isatty()
        self._last = time.monotonic()

    def update(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
        elif time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self.say(text)

    def end(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self.say(text)


def _counts(metrics: dict[str, float]) -> str:
    return (f"processed {int(handled(metrics))}, "
            f"dead-lettered {int(total(metrics, 'lifecycle_events_rejected_total'))}")


def _later_counts(metrics: dict[str, float]) -> str:
    return (f"{_counts(metrics)}, consents lapsed {int(total(metrics, 'lifecycle_consents_expired_total'))}, "
            f"sessions open {int(metrics.get('lifecycle_open_sessions{}', 0))}, erasures complete "
            f"{int(total(metrics, 'lifecycle_erasure_requests_completed_total'))}"
            f"/{int(total(metrics, 'lifecycle_erasure_requests_opened_total'))}, "
            f"items past retention erased {int(total(metrics, 'lifecycle_retention_items_deleted_total'))}")


def _send(live: Settings, events: Iterator[dict[str, Any]], progress: ProgressLine, what: str) -> int:
    """Every event sent, a batch at a time (one key request per batch, docs/performance.md)."""
    sent, metrics, scraped = 0, {}, 0.0
    with Emitter(live) as emitter:
        for batch in _batches(events, SEND_BATCH):
            sent += len(emitter.emit_many(batch))
            if time.monotonic() - scraped > 0.5:
                metrics, scraped = scrape(live), time.monotonic()
            progress.update(f"  {what}: emitted {sent} events, {_counts(metrics)}")
    return sent


def _batches(events: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for event in events:
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _wait(live: Settings, progress: ProgressLine, deadline_s: float, what: str,
          done: Callable[[dict[str, float]], bool],
          counts: Callable[[dict[str, float]], str] = _counts) -> dict[str, float]:
    start = time.monotonic()
    metrics: dict[str, float] = {}
    while time.monotonic() < start + deadline_s:
        metrics = scrape(live)
        if metrics and done(metrics):
            progress.end(f"  {what}: {counts(metrics)}, settled after {time.monotonic() - start:.1f} s")
            return metrics
        progress.update(f"  {what}: {counts(metrics)}")
        time.sleep(0.25)
    progress.end(f"  {what}: {counts(metrics)}; not settled within {deadline_s:.0f} s")
    return metrics


_REPORT_SQL = {
    "accounts by status": "SELECT status || CASE WHEN processing_restricted THEN ' (restricted)' ELSE '' END, "
                          "count(*) FROM accounts GROUP BY 1 ORDER BY 1",
    "session logs by end": "SELECT end_reason, count(*), sum(file_count), sum(total_bytes) FROM session_logs "
                           "GROUP BY 1 ORDER BY 1",
    "failed logins kept": "SELECT count(*) FROM failed_logins",
    "consent history rows": "SELECT count(*) FROM consent_history",
    "consent now, by purpose (granted, lapsed, refused)":
        "SELECT purpose, count(*) FILTER (WHERE granted AND expired_at IS NULL), "
        "count(*) FILTER (WHERE expired_at IS NOT NULL), count(*) FILTER (WHERE NOT granted) "
        "FROM consent_current GROUP BY 1 ORDER BY 1",
    "newsletter subscribed / marketing audience":
        "SELECT (SELECT count(*) FROM newsletter WHERE subscribed), (SELECT count(*) FROM marketing_audience)",
    "traffic buckets published (page views, visitors)":
        "SELECT count(*), coalesce(sum(page_views), 0), coalesce(sum(visitors), 0) FROM traffic_aggregates",
    "traffic buckets suppressed (under k)": "SELECT coalesce(sum(buckets), 0) FROM traffic_suppressed",
    "erasures (state, count)": "SELECT state, count(*) FROM erasure_requests GROUP BY 1 ORDER BY 1",
    "erasures store by store (store, status, requests, items erased)":
        "SELECT store, status, count(*), sum(items_erased) FROM erasure_progress GROUP BY 1, 2 ORDER BY 1, 2",
    "proofs of erasure (keyed hash only)": "SELECT count(*) FROM erasure_proofs",
    "data keys (live, destroyed: what the log holds of those subjects is unreadable)":
        "SELECT count(*) FILTER (WHERE wrapped IS NOT NULL), count(*) FILTER (WHERE wrapped IS NULL) FROM data_keys",
}


def _record_of_processing(live: Settings, say: Callable[[str], None]) -> None:
    """The record of processing (GDPR Art. 30) of what the demo ran, written beside its state."""
    from lifecycle.records import build_record, load_processing, registered_stores, write

    record = build_record(live, registered_stores(live), load_processing())
    md, _ = write(record, live.state_dir / "records")
    say(f"record of processing (GDPR Art. 30): {len(record['activities'])} categories, "
        f"{len(record['recipients'])} recipients, written to {md} (and .json)")
    for activity in record["activities"][:3]:
        say(f"  {activity['category']}: {activity['time_limit']}; purpose: \"{activity['purpose']}\"")


def _certificates(live: Settings, say: Callable[[str], None], most: int = 5) -> None:
    """Certificates of erasure for the newest completed erasures, as `lifecycle proof export`
    issues them (the console hands them out and checks them)."""
    import psycopg

    from lifecycle import proofs

    key = proofs.load_signing_key(live)
    with psycopg.connect(live.postgres_dsn or "", connect_timeout=10) as conn:
        done = [str(r[0]) for r in conn.execute("SELECT request_id FROM erasure_proofs WHERE state = 'complete' "
                                               "ORDER BY completed_at DESC LIMIT %s", (most,))]
        for rid in done:
            proofs.record(conn, rid, proofs.sign(proofs.certificate(conn, live, rid), key))
    say(f"certificates of erasure issued for {len(done)} completed erasure(s) (`lifecycle proof export ID`)")


def _access_export(live: Settings, say: Callable[[str], None], tag: str) -> bool:
    """One person's copy of their data (GDPR Art. 15, 20), asked as a client would, over HTTP
    with a read token: every store answers the access order (docs/access.md)."""
    import io
    import zipfile

    import psycopg

    from lifecycle.streams.http.auth import load_tokens
    from lifecycle.supervisor import http_get

    with psycopg.connect(live.postgres_dsn or "") as conn:
        row = conn.execute("SELECT account_id FROM accounts WHERE status IN ('active', 'registered') "
                           "AND account_id LIKE %s ORDER BY 1 LIMIT 1", (f"acc-{tag}%",)).fetchone()
    if row is None:
        say("access export: no active account to ask for")
        return False
    token = next((t.decode() for t, scopes in load_tokens(live).entries if "read" in scopes), None)
    url = f"http://{live.http_host}:{live.http_port}/v1/accounts/{row[0]}/export"
    end = time.monotonic() + 60
    while time.monotonic() < end:
        status, body = http_get(url, timeout_s=10, token=token)
        if status == 200:
            path = live.state_dir / f"access-{row[0]}.zip"
            path.write_bytes(body)
            manifest = json.loads(zipfile.ZipFile(io.BytesIO(body)).read("manifest.json"))
            say(f"access export (GDPR Art. 15, 20) of {row[0]}: {len(body)} bytes written to {path}")
            for entry in manifest["files"]:
                say(f"  {entry['path']}: {entry['items']} item(s), sha256 {entry['sha256'][:16]}...")
            say(f"  provided by the person: {', '.join(manifest['provided'])}; observed: "
                f"{', '.join(manifest['observed'])}; recipients: {len(manifest['recipients'])} stores")
            return True
        if status != 202:
            say(f"access export: HTTP {status}")
            return False
        time.sleep(0.5)
    say("access export: not every store answered within 60 s")
    return False


def _report(live: Settings, metrics: dict[str, float], sent: int, bad: int, say: Callable[[str], None]) -> bool:
    import psycopg

    say("")
    say("== report ==")
    say("intake (events accepted, by topic and type):")
    for key, value in sorted(metrics.items()):
        if key.startswith("lifecycle_events_ingested_total{") and value:
            say(f"  {key[len('lifecycle_events_ingested_total'):]:<70} {int(value)}")
    say("dead letters (records refused, by topic and reason):")
    for key, value in sorted(metrics.items()):
        if key.startswith("lifecycle_events_rejected_total{") and value:
            say(f"  {key[len('lifecycle_events_rejected_total'):]:<70} {int(value)}")
    with psycopg.connect(live.postgres_dsn or "") as conn:
        for title, sql in _REPORT_SQL.items():
            rows = conn.execute(sql).fetchall()
            say(f"{title}: " + "; ".join(" ".join(str(c) for c in row) for row in rows))
    for name in ("lifecycle_consents_expired_total", "lifecycle_analytics_events_excluded_total",
                 "lifecycle_events_suppressed_total", "lifecycle_retention_items_deleted_total",
                 "lifecycle_outbox_published_total"):
        parts = [f"{k[len(name):]}={int(v)}" for k, v in sorted(metrics.items()) if k.startswith(name + "{") and v]
        say(f"{name}: " + (", ".join(parts) or "0"))
    seen = handled(metrics)
    rejected = total(metrics, "lifecycle_events_rejected_total")
    expired = total(metrics, "lifecycle_consents_expired_total")
    opened = total(metrics, "lifecycle_erasure_requests_opened_total")
    completed = total(metrics, "lifecycle_erasure_requests_completed_total")
    retained = total(metrics, "lifecycle_retention_items_deleted_total")
    say(f"erasures opened {int(opened)}, completed {int(completed)}")
    say(f"retention (deploy/retention.yaml): {int(retained)} items past their window erased "
        "(day one's session logs and failed logins after 12 months, consent proof after 13)")
    ok = seen == sent and rejected == bad and expired > 0 and opened == completed > 0 and retained > 0
    say(f"accepted {int(seen)} of {sent} valid events; dead-lettered {int(rejected)} of {bad} broken records; "
        f"{int(expired)} consents lapsed after 13 months: " + ("OK" if ok else "MISMATCH"))
    return ok
