"""Retention windows on the real broker and PostgreSQL, with the files store, on the event-time
clock: every swept category is erased at its window's end and not a day before; a legal hold
keeps what it covers past the window, through the account's closure, until it is released."""

from __future__ import annotations

import datetime as dt
import json
import os

import psycopg

from lifecycle.core.policy import load_policy
from lifecycle.supervisor import http_get
from tests.helpers import DAY, HOUR, MINUTE, T0, emit, event, last_by_key, metric, wait_for
from tests.unit.samples import PII


def _count(settings, sql, *params):
    with psycopg.connect(settings.postgres_dsn) as conn:
        return conn.execute(sql, params).fetchone()[0]


def _at(months=0, days=0):
    start = dt.datetime.fromtimestamp(T0 / 1000, dt.UTC)
    total = start.month - 1 + months
    moved = start.replace(year=start.year + total // 12, month=total % 12 + 1)
    return int(moved.timestamp() * 1000) + days * DAY


def _move_clock(settings, at, categories, stores=("postgres",)):
    """Move the policy clock to ``at`` and wait until every store has swept each category up to
    the cutoff that time gives."""
    policy = load_policy(settings.retention_policy)
    emit(settings, event("session.login_failed", at, account="clock-mover", ip="192.0.2.1"))
    for category in categories:
        cutoff = policy.categories[category].window.cutoff(at)
        for store in stores:
            wait_for(lambda store=store, category=category, cutoff=cutoff: _count(
                settings, "SELECT count(*) FROM retention_runs WHERE store = %s AND category = %s "
                          "AND cutoff >= %s AND error IS NULL", store, category,
                dt.datetime.fromtimestamp(cutoff / 1000, dt.UTC)) == 1,
                     deadline_s=60, what=f"{store} to sweep {category}")


def _billing(settings, account, at_ms):
    folder = settings.files_dir / account / "billing"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "invoice.pdf"
    path.write_text(f"invoice for {PII['last_name']}")
    os.utime(path, (at_ms / 1000, at_ms / 1000))
    return path


def _life(account, at):
    return [
        event("account.registered", at, account=account, email=PII["email"], first_name=PII["first_name"],
              last_name=PII["last_name"]),
        event("consent.cookies_granted", at + 1, account=account, visitor=f"vis-{account}",
              purposes=["necessary", "analytics"], policy_version="2026-01"),
        event("consent.newsletter_subscribed", at + 2, account=account),
        event("session.started", at + MINUTE, account=account, session_id=f"{account}-s1", ip=PII["ip"],
              login_method="password"),
        event("session.ended", at + 2 * MINUTE, account=account, session_id=f"{account}-s1", reason="logout"),
        event("session.login_failed", at + 3 * MINUTE, account=account, ip=PII["ip"]),
    ]


def test_each_category_goes_at_its_windows_end_and_a_hold_keeps_its_part(settings, worker, connectors):
    # An old session (December 2025, in a month of its own), a life in January 2026 for two accounts,
    # one of them under legal hold; an anonymous traffic bucket and billing records.
    emit(settings, *_life("acc-r", T0), *_life("acc-held", T0),
          event("account.legal_hold_set", T0 + 10 * MINUTE, account="acc-held"),
          event("consent.cookies_withdrawn", T0 + 5 * MINUTE, visitor="vis-gone", purposes=["analytics"],
                policy_version="2026-01"),
          event("session.started", T0 - 40 * DAY, account="acc-r", session_id="old", ip=PII["ip"],
                login_method="password"),
          event("session.ended", T0 - 40 * DAY + MINUTE, account="acc-r", session_id="old", reason="logout"))
    wait_for(lambda: _count(settings, "SELECT count(*) FROM session_logs") == 3, what="three session logs")
    wait_for(lambda: _count(settings, "SELECT count(*) FROM legal_holds") == 1, what="the hold")
    with psycopg.connect(settings.postgres_dsn) as conn:
        conn.execute("INSERT INTO traffic_aggregates "
                     "VALUES (%s, 'firefox', 'linux', 'direct', 'text/html', 'FR', 9, 7)",
                     (dt.datetime.fromtimestamp(T0 / 1000, dt.UTC),))
        conn.execute("INSERT INTO traffic_suppressed VALUES (%s, 2)", (dt.datetime.fromtimestamp(T0 / 1000, dt.UTC),))
    billing = _billing(settings, "acc-r", T0)
    held_billing = _billing(settings, "acc-held", T0)

    # Session logs and security information: 12 months after the event.
    _move_clock(settings, _at(months=12, days=-1), ["session_logs", "security_information"])
    assert _count(settings, "SELECT count(*) FROM session_logs WHERE account_id = 'acc-r'") == 1
    assert _count(settings, "SELECT count(*) FROM pg_class WHERE relname = 'session_logs_p202512'") == 0  # dropped
    assert _count(settings, "SELECT count(*) FROM failed_logins WHERE account_id = 'acc-r'") == 1
    _move_clock(settings, _at(months=12, days=1), ["session_logs", "security_information"])
    assert _count(settings, "SELECT count(*) FROM session_logs WHERE account_id = 'acc-r'") == 0
    assert _count(settings, "SELECT count(*) FROM failed_logins WHERE account_id = 'acc-r'") == 0
    assert _count(settings, "SELECT count(*) FROM session_logs WHERE account_id = 'acc-held'") == 1  # on hold
    assert _count(settings, "SELECT count(*) FROM failed_logins WHERE account_id = 'acc-held'") == 1

    # Consent proof: 13 months after it was given; the proof of a subscription still in force stays.
    # So does a current consent 13 months after it stopped being in force (a withdrawal when made,
    # a grant when it lapsed): a visitor who never came back leaves nothing behind.
    _move_clock(settings, _at(months=13, days=-1), ["consent_history"])
    assert _count(settings, "SELECT count(*) FROM consent_history WHERE subject_id = 'acc-r'") == 2
    assert _count(settings, "SELECT count(*) FROM consent_current WHERE subject_id IN ('acc-r', 'vis-gone')") == 3
    _move_clock(settings, _at(months=13, days=1), ["consent_history"])
    assert _count(settings, "SELECT count(*) FROM consent_current WHERE subject_id = 'vis-gone'") == 0
    assert _count(settings, "SELECT count(*) FROM consent_current WHERE subject_id = 'acc-r' "
                            "AND expired_at IS NOT NULL") == 2  # lapsed a day ago: "lapsed" for 13 months
    # ... nor on the compacted topic: the visitor's key is tombstoned; acc-r keeps its newsletter.
    last = wait_for(lambda: (found := last_by_key(settings, "consents")).get(b"vis-gone", b"") is None and found,
                    what="the visitor's consent state tombstoned")
    assert last[b"acc-r"] is not None
    assert _count(settings, "SELECT count(*) FROM consent_history WHERE subject_id = 'acc-r' "
                            "AND event_type = 'consent.cookies_granted'") == 0
    assert _count(settings, "SELECT count(*) FROM consent_history WHERE subject_id = 'acc-r' "
                            "AND event_type = 'consent.newsletter_subscribed'") == 1
    assert _count(settings, "SELECT count(*) FROM consent_history WHERE subject_id = 'acc-held' "
                            "AND event_type = 'consent.cookies_granted'") == 0  # the hold does not cover it

    # Traffic aggregates: 25 months.
    _move_clock(settings, _at(months=25, days=-1), ["traffic_aggregates"])
    assert _count(settings, "SELECT count(*) FROM traffic_aggregates") == 1
    assert _count(settings, "SELECT count(*) FROM traffic_suppressed") == 1
    _move_clock(settings, _at(months=25, days=1), ["traffic_aggregates"])
    assert _count(settings, "SELECT count(*) FROM traffic_aggregates") == 0
    assert _count(settings, "SELECT count(*) FROM traffic_suppressed") == 0  # the counts of what was not published

    assert _count(settings, "SELECT count(*) FROM consent_current WHERE subject_id = 'acc-r'") == 2  # 25 < 26 months

    # Billing records: 10 years, in the files store; the held account's stay.
    _move_clock(settings, _at(months=120, days=-1), ["billing_records"], stores=("files",))
    assert billing.exists() and held_billing.exists()
    _move_clock(settings, _at(months=120, days=1), ["billing_records"], stores=("files",))
    assert not billing.exists() and held_billing.exists()
    assert _count(settings, "SELECT count(*) FROM consent_current WHERE subject_id = 'acc-r'") == 0

    # The hold is lifted: everything due goes at once.
    emit(settings, event("account.legal_hold_released", _at(months=120, days=2), account="acc-held"))
    wait_for(lambda: _count(settings, "SELECT count(*) FROM session_logs WHERE account_id = 'acc-held'") == 0,
             deadline_s=60, what="the held session log to go")
    wait_for(lambda: _count(settings, "SELECT count(*) FROM failed_logins WHERE account_id = 'acc-held'") == 0,
             deadline_s=60, what="the held failed login to go")
    wait_for(lambda: not held_billing.exists(), deadline_s=60, what="the held billing record to go")

    url = worker.url("/metrics")
    for category, store, items in (("session_logs", "postgres", 3), ("security_information", "postgres", 2),
                                   ("billing_records", "files", 2)):
        wait_for(lambda category=category, store=store, items=items: metric(
            url, "lifecycle_retention_items_deleted_total", category=category, store=store) >= items,
            what=f"{category} counted")
    assert metric(url, "lifecycle_retention_items_deleted_total", category="session_logs", store="postgres") == 3
    wait_for(lambda: metric(url, "lifecycle_retention_oldest_overdue_seconds") == 0, what="nothing overdue")
    assert metric(url, "lifecycle_retention_last_sweep_timestamp_seconds", store="postgres") > 0


def test_closure_under_legal_hold_keeps_what_the_hold_covers_until_released(settings, worker, connectors):
    account = "acc-dispute"
    emit(settings, *_life(account, T0), event("account.legal_hold_set", T0 + HOUR, account=account))
    wait_for(lambda: _count(settings, "SELECT count(*) FROM legal_holds") == 1, what="the hold")
    billing = _billing(settings, account, T0)
    (settings.files_dir / account / "notes.txt").write_text("notes")
    emit(settings, event("account.closed", T0 + 2 * HOUR, account=account))

    def erasures(state):
        status, body = http_get(worker.url(f"/v1/accounts/{account}/erasure"), token=worker.settings.read_token)
        found = json.loads(body)["erasures"] if status == 200 else []
        return [e for e in found if e["state"] == state]

    first = wait_for(lambda: erasures("complete"), deadline_s=60, what="the held erasure")[0]
    by_store = {s["store"]: s["status"] for s in first["stores"]}
    assert by_store["postgres"] == "retained_legal_hold" and by_store["files"] == "retained_legal_hold"
    assert _count(settings, "SELECT count(*) FROM accounts WHERE account_id = %s", account) == 0  # not covered
    assert _count(settings, "SELECT count(*) FROM consent_history WHERE subject_id = %s", account) == 0
    assert _count(settings, "SELECT count(*) FROM session_logs WHERE account_id = %s", account) == 1  # covered
    assert billing.exists() and not (settings.files_dir / account / "notes.txt").exists()

    emit(settings, event("account.legal_hold_released", T0 + DAY, account=account))
    wait_for(lambda: len(erasures("complete")) == 2, deadline_s=60, what="the erasure of what the hold kept")
    assert _count(settings, "SELECT count(*) FROM session_logs WHERE account_id = %s", account) == 0
    assert _count(settings, "SELECT count(*) FROM failed_logins WHERE account_id = %s", account) == 0
    assert _count(settings, "SELECT count(*) FROM legal_holds") == 0
    assert not (settings.files_dir / account).exists()
    retained = list((settings.files_dir / "_retained").rglob("invoice.pdf"))  # pseudonymised, kept 10 years
    assert len(retained) == 1 and account not in str(retained[0])
    # Nothing came back: the account row was not re-created by the hold events.
    assert _count(settings, "SELECT count(*) FROM accounts WHERE account_id = %s", account) == 0
