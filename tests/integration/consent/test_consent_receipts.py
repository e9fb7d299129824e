"""Consent receipts (issue 16): each choice names the notice shown (version and SHA-256); the read
API answers a receipt per purpose, a refusal remembered with the date the person may be asked
again, the lapse and how long the proof is kept; a malformed notice hash is refused by field."""

from __future__ import annotations

import hashlib
import json

from lifecycle.core.timeutil import add_months, ms_to_dt
from lifecycle.supervisor import http_get
from tests.helpers import DAY, HOUR, T0, emit, event, post, wait_for

NOTICE = hashlib.sha256(b"We use cookies to measure the audience ... (notice 2026-03)").hexdigest()
NEWSLETTER = hashlib.sha256(b"Receive our newsletter ... (notice 2026-02)").hexdigest()


def _iso(ms):
    return ms_to_dt(ms).isoformat().replace("+00:00", "Z")


def _receipts(worker, subject, at=None):
    query = f"?at={at}" if at is not None else ""
    status, body = http_get(worker.url(f"/v1/subjects/{subject}/consent{query}"), token=worker.settings.read_token)
    assert status == 200, body
    return {r["purpose"]: r for r in json.loads(body)["receipts"]}


def test_each_choice_gets_a_receipt_and_a_refusal_says_when_to_ask_again(settings, worker):
    acc = "acc-receipts"
    choices = dict(account=acc, visitor="vis-receipts", policy_version="2026-03", notice_hash=NOTICE)
    emit(settings,
         event("consent.cookies_granted", T0, purposes=["analytics", "preferences"], **choices),
         event("consent.cookies_withdrawn", T0 + HOUR, purposes=["advertising"], **choices),  # never granted
         event("consent.cookies_withdrawn", T0 + 2 * HOUR, purposes=["preferences"], **choices),
         event("consent.newsletter_subscribed", T0 + 3 * HOUR, account=acc, policy_version="2026-02",
               notice_hash=NEWSLETTER))
    wait_for(lambda: len(_receipts(worker, acc)) == 4, what="four receipts")
    receipts = _receipts(worker, acc, at=T0 + DAY)
    assert {p: r["state"] for p, r in receipts.items()} == {
        "analytics": "given", "preferences": "withdrawn", "advertising": "refused", "newsletter": "given"}
    given = receipts["analytics"]
    assert given["receipt_format"] == "lifecycle-consent-receipt/1"
    assert given["notice"] == {"version": "2026-03", "sha256": NOTICE}
    assert given["decided_at"] == _iso(T0) and given["expires_at"] == _iso(add_months(T0, 13))
    assert given["ask_again_after"] == given["expires_at"]
    assert given["proof"] == {"category": "consent_history", "retention": "13 months from consent time",
                              "kept_until": _iso(add_months(T0, 13))}
    assert given["controller"]["contact"] == "privacy@centermetrics.com"
    refused = receipts["advertising"]
    assert refused["expires_at"] is None and refused["ask_again_after"] == _iso(add_months(T0 + HOUR, 6))
    assert receipts["preferences"]["ask_again_after"] == _iso(add_months(T0 + 2 * HOUR, 6))
    assert receipts["newsletter"]["notice"] == {"version": "2026-02", "sha256": NEWSLETTER}
    assert _receipts(worker, acc, at=add_months(T0, 13) + 1)["analytics"]["state"] == "expired"

    bad = event("consent.cookies_granted", T0 + 4 * HOUR, purposes=["analytics"], **{**choices, "notice_hash": "md5"})
    status, body = post(worker.url("/v1/events"), bad, worker.settings.http_token)
    assert status == 400 and any(e["field"] == "notice_hash" for e in body["errors"]), body
