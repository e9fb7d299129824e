"""The processors on the real broker and PostgreSQL, each promise with its own assertions."""

from __future__ import annotations

import datetime as dt

import psycopg

from lifecycle.connectors.emitter import Emitter
from lifecycle.schemas import Codec
from lifecycle.streams.consent.mail import may_send
from tests.helpers import DAY, HOUR, MINUTE, T0, event, metric, wait_for
from tests.integration.schemas.test_wire_interop import _read_all


def _emit(settings, *events):
    with Emitter(settings) as emitter:
        for e in events:
            emitter.emit(e)


def _advance_to(settings, at):
    """Move the event-time clock: any event dated ``at``."""
    _emit(settings, event("session.login_failed", at, account="clock-mover", failure_reason="tick"))


def _query(settings, sql, *params):
    with psycopg.connect(settings.postgres_dsn) as conn:
        return conn.execute(sql, params).fetchall()


def test_a_session_log_has_the_exact_files_and_times(settings, worker):
    sizes = [1_000, 2_500_000, 42]
    files = [event("session.file_transferred", T0 + (i + 1) * MINUTE, account="acc-s1", session_id="s1",
                   mime_type="application/pdf", size_bytes=size) for i, size in enumerate(sizes)]
    _emit(settings,
          event("session.started", T0, account="acc-s1", session_id="s1", ip="198.51.100.20", domain="app.test",
                browser="firefox", os="linux", login_method="password", second_factor="totp"),
          *files,
          event("session.ended", T0 + 10 * MINUTE, account="acc-s1", session_id="s1", reason="logout"))
    rows = wait_for(lambda: _query(settings, "SELECT file_count, total_bytes, files, started_at, ended_at, "
                                   "end_reason, second_factor FROM session_logs WHERE session_id = 's1'"),
                    what="the session log")
    count, total, logged, started, ended, reason, factor = rows[0]
    assert (count, total, reason, factor) == (3, sum(sizes), "logout", "totp")
    assert [(f["transferred_at"], f["size_bytes"]) for f in logged] == [
        (T0 + (i + 1) * MINUTE, size) for i, size in enumerate(sizes)]
    assert started == dt.datetime.fromtimestamp(T0 / 1000, dt.UTC)
    assert ended == dt.datetime.fromtimestamp((T0 + 10 * MINUTE) / 1000, dt.UTC)
    [msg] = _read_all(settings, settings.topic("session-logs"), 1)
    record = Codec().decode(msg.value, topic="session-logs").value
    assert msg.key == b"acc-s1" and record["file_count"] == 3 and record["total_bytes"] == sum(sizes)


def test_an_idle_session_is_closed_by_the_timeout(settings, worker):
    _emit(settings,
          event("session.started", T0, account="acc-idle", session_id="idle", ip="198.51.100.21",
                login_method="sso"),
          event("session.file_transferred", T0 + MINUTE, account="acc-idle", session_id="idle",
                mime_type="text/csv", size_bytes=10))
    wait_for(lambda: _query(settings, "SELECT 1 FROM open_sessions WHERE session_id = 'idle'"), what="open session")
    _advance_to(settings, T0 + MINUTE + 29 * MINUTE)  # not yet: 29 idle minutes
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_ingested_total",
                            event_type="session.login_failed") >= 1, what="the clock event")
    assert _query(settings, "SELECT 1 FROM open_sessions WHERE session_id = 'idle'")
    _advance_to(settings, T0 + MINUTE + 31 * MINUTE)
    rows = wait_for(lambda: _query(settings, "SELECT end_reason, ended_at, file_count FROM session_logs "
                                   "WHERE session_id = 'idle'"), what="the timeout")
    assert rows[0][0] == "timeout" and rows[0][2] == 1
    assert rows[0][1] == dt.datetime.fromtimestamp((T0 + 31 * MINUTE) / 1000, dt.UTC)


def _consent(worker, subject):
    import json

    from lifecycle.supervisor import http_get

    status, body = http_get(worker.url(f"/v1/subjects/{subject}/consent"), token=worker.settings.read_token)
    assert status == 200
    return json.loads(body)


def test_consent_lapses_13_months_after_it_was_given(settings, worker):
    given = T0  # 2026-01-15
    lapse = int(dt.datetime(2027, 2, 15, tzinfo=dt.UTC).timestamp() * 1000)  # + 13 calendar months
    _emit(settings, event("consent.cookies_granted", given, visitor="vis-c", purposes=["analytics", "necessary"],
                          policy_version="2026-01"))
    state = wait_for(lambda: _consent(worker, "vis-c")["purposes"], what="the consent")
    assert state["analytics"]["granted"] and state["analytics"]["expires_at"] == "2027-02-15T00:00:00Z"

    _advance_to(settings, lapse - DAY)
    wait_for(lambda: _consent(worker, "vis-c")["as_of"].startswith("2027-02-14"), what="clock at T+13mo-1d")
    assert _consent(worker, "vis-c")["purposes"]["analytics"]["granted"] is True
    assert metric(worker.url("/metrics"), "lifecycle_consents_expired_total", purpose="analytics") == 0

    _advance_to(settings, lapse + DAY)
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_consents_expired_total", purpose="analytics") == 1,
             what="the expiry")
    assert _consent(worker, "vis-c")["purposes"]["analytics"]["granted"] is False
    codec = Codec()
    records = [codec.decode(m.value, topic="consents") for m in _read_all(settings, settings.topic("consents"), 4)]
    expired = [r.value for r in records if r.record.short_name == "ConsentExpired"]
    assert {(e["subject_id"], e["purpose"], e["expired_at"]) for e in expired} == {
        ("vis-c", "analytics", lapse), ("vis-c", "necessary", lapse)}
    assert records[-1].record.short_name == "ConsentState"  # the state last: compaction keeps it


def test_unsubscribe_stops_marketing_not_transactional_mail(settings, worker):
    _emit(settings,
          event("account.registered", T0, account="acc-m", email="m@example.test", first_name="M", last_name="N"),
          event("account.email_verified", T0 + 1, account="acc-m"),
          event("consent.newsletter_subscribed", T0 + 2, account="acc-m"),
          event("account.registered", T0, account="acc-unverified", email="u@example.test", first_name="U",
                last_name="V"),
          event("consent.newsletter_subscribed", T0 + 2, account="acc-unverified"))
    with psycopg.connect(settings.postgres_dsn) as conn:
        wait_for(lambda: may_send(conn, "acc-m", "marketing"), what="marketing audience")
        assert may_send(conn, "acc-m", "transactional")
        assert not may_send(conn, "acc-unverified", "marketing")  # unverified: never
        assert may_send(conn, "acc-unverified", "transactional")
    _emit(settings, event("consent.newsletter_unsubscribed", T0 + 3, account="acc-m"))
    with psycopg.connect(settings.postgres_dsn) as conn:
        wait_for(lambda: not may_send(conn, "acc-m", "marketing"), what="the unsubscription")
        assert may_send(conn, "acc-m", "transactional")
        assert not may_send(conn, "acc-unverified", "marketing")


def _page(visitor, at, account=None, browser="firefox"):
    return event("analytics.page_viewed", at, visitor=visitor, account=account, path="/pricing",
                 referrer_domain="search.test", browser=browser, os="linux", mime_type="text/html", country="FR")


def test_traffic_counts_only_consented_unrestricted_visitors_and_hides_small_buckets(settings, worker):
    hour = T0 + 10 * HOUR
    consenting = [f"vis-k{i}" for i in range(6)]
    grants = [event("consent.cookies_granted", T0, visitor=v, purposes=["analytics"], policy_version="2026-01")
              for v in consenting + ["vis-small-1", "vis-small-2", "vis-r"]]
    _emit(settings, *grants,
          event("account.registered", T0, account="acc-r", email="r@example.test", first_name="R", last_name="S"),
          event("account.email_verified", T0 + 1, account="acc-r"),
          event("consent.newsletter_subscribed", T0 + 2, account="acc-r"),
          event("account.processing_restricted", T0 + 3, account="acc-r"))
    with psycopg.connect(settings.postgres_dsn) as conn:
        wait_for(lambda: _query(settings, "SELECT count(*) FROM consent_current")[0][0] == 9, what="consents")
        wait_for(lambda: _query(settings, "SELECT processing_restricted FROM accounts WHERE account_id='acc-r'")
                 == [(True,)], what="the restriction")
        assert not may_send(conn, "acc-r", "marketing")  # restricted: no marketing
    pages = [_page(v, hour + i * MINUTE) for i, v in enumerate(consenting)]          # 6 visitors: published
    pages += [_page("vis-nobody", hour + 30 * MINUTE)]                                 # no consent
    pages += [_page("vis-r", hour + 31 * MINUTE, account="acc-r")]                     # restricted account
    pages += [_page(v, hour + 40 * MINUTE, browser="safari") for v in ("vis-small-1", "vis-small-2")]  # 2 < k
    _emit(settings, *pages)
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_ingested_total",
                            event_type="analytics.page_viewed") == len(pages), what="page views")
    _advance_to(settings, hour + 2 * HOUR)
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_traffic_buckets_closed_total") >= 2,
             what="buckets closing")
    published = _query(settings, "SELECT browser, page_views, visitors FROM traffic_aggregates")
    assert published == [("firefox", 6, 6)]
    assert _query(settings, "SELECT sum(buckets) FROM traffic_suppressed") == [(1,)]
    assert metric(worker.url("/metrics"), "lifecycle_analytics_events_excluded_total", reason="no_consent") == 1
    assert metric(worker.url("/metrics"), "lifecycle_analytics_events_excluded_total", reason="restricted") == 1
    assert _query(settings, "SELECT count(*) FROM traffic_pending") == [(0,)]  # identifiers gone
    [msg] = _read_all(settings, settings.topic("traffic-aggregates"), 1)
    agg = Codec().decode(msg.value, topic="traffic-aggregates").value
    assert agg["visitors"] == 6 and "vis" not in msg.key.decode()
