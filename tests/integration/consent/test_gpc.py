"""Global Privacy Control (issue 29) on the real broker and PostgreSQL: a browser's `Sec-GPC: 1`
opts the visitor and every account linked to it out of advertising (visible in the consent answer
and its receipt), and each case of the conflict table in docs/processors.md holds."""

from __future__ import annotations

import json
import urllib.request

from lifecycle.connectors.emitter import Emitter
from lifecycle.supervisor import http_get
from tests.helpers import HOUR, T0, emit, event, metric, wait_for


def _post_gpc(worker, events, token):
    request = urllib.request.Request(worker.url("/v1/events"), data=json.dumps(events).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                              "Sec-GPC": "1"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return resp.status, json.loads(resp.read())


def _advertising(worker, subject):
    """(granted, receipt) for advertising, or None while no decision is recorded."""
    status, body = http_get(worker.url(f"/v1/subjects/{subject}/consent"), token=worker.settings.read_token)
    assert status == 200
    answer = json.loads(body)
    purpose = answer["purposes"].get("advertising")
    receipts = [r for r in answer["receipts"] if r["purpose"] == "advertising"]
    return (purpose["granted"], receipts[0]) if purpose and receipts else None


def _grant(subject, at, kind="consent.cookies_granted", **ids):
    return event(kind, at, purposes=["advertising"], policy_version="v3", **ids) if ids else \
        event(kind, at, visitor=subject, purposes=["advertising"], policy_version="v3")


def _signal(visitor, at, account=None):
    return event("consent.gpc_signal", at, visitor=visitor, account=account)


def test_a_browser_signal_opts_out_the_visitor_and_its_linked_accounts(settings, worker):
    # The visitor is linked to an account by a session that carried both ids.
    emit(settings, event("account.registered", T0, account="acc-gpc", email="g@example.test", first_name="G",
                         last_name="P"),
         _grant("acc-gpc", T0 + 1, account="acc-gpc", visitor="vis-gpc"))
    wait_for(lambda: (a := _advertising(worker, "acc-gpc")) and a[0], deadline_s=30, what="the grant")
    status, answer = _post_gpc(worker, [event("analytics.page_viewed", T0 + HOUR, visitor="vis-gpc",
                                              path="/pricing")], settings.http_token)
    assert status == 202 and answer["gpc_signals"] == 1
    for subject in ("vis-gpc", "acc-gpc"):
        granted, receipt = wait_for(lambda s=subject: (a := _advertising(worker, s)) and not a[0] and a,
                                    deadline_s=30, what=f"advertising opted out for {subject}")
        assert receipt["decided_by"] == "global_privacy_control" and receipt["gpc_signal_since"]
        assert receipt["state"] in ("withdrawn", "refused")
    assert metric(worker.url("/metrics"), "lifecycle_gpc_signals_total", outcome="seen") == 1
    assert metric(worker.url("/metrics"), "lifecycle_gpc_signals_total", outcome="applied") == 2


def test_the_conflict_table_case_by_case(settings, worker):
    h = HOUR
    cases = {  # visitor: (events in event-time order, advertising granted at the end, decided by)
        "vis-a-grant-then-signal": ([_grant("vis-a-grant-then-signal", T0), _signal("vis-a-grant-then-signal", T0 + h)],
                                    False, "global_privacy_control"),
        "vis-b-signal-then-grant": ([_signal("vis-b-signal-then-grant", T0), _grant("vis-b-signal-then-grant", T0 + h)],
                                    True, "choice"),
        "vis-c-grant-over-signal-then-signal": ([_signal("vis-c-grant-over-signal-then-signal", T0),
                                                 _grant("vis-c-grant-over-signal-then-signal", T0 + h),
                                                 _signal("vis-c-grant-over-signal-then-signal", T0 + 2 * h)],
                                                True, "choice"),
        "vis-d-signal-alone": ([_signal("vis-d-signal-alone", T0)], False, "global_privacy_control"),
        "vis-e-withdrawn-then-signal": ([_grant("vis-e-withdrawn-then-signal", T0),
                                         _grant("vis-e-withdrawn-then-signal", T0 + h, "consent.cookies_withdrawn"),
                                         _signal("vis-e-withdrawn-then-signal", T0 + 2 * h)], False, "choice"),
        "vis-f-late-old-signal": ([_grant("vis-f-late-old-signal", T0 + h), _signal("vis-f-late-old-signal", T0)],
                                  True, "choice"),
    }
    for events, _, _ in cases.values():
        for e in events:  # one at a time, in the order given (the late one arrives last)
            emit(settings, e)
    with Emitter(settings) as emitter:  # the SDK's equivalent for a server-side caller
        emitter.emit(event("analytics.page_viewed", T0, visitor="vis-g-sdk", path="/"), gpc=True)
    cases["vis-g-sdk"] = ([], False, "global_privacy_control")
    for visitor, (_, granted, decided_by) in cases.items():
        found = wait_for(lambda v=visitor, g=granted, d=decided_by: (a := _advertising(worker, v)) and a[0] == g
                         and a[1]["decided_by"] == d and a, deadline_s=30, what=f"case {visitor}")
        assert found[1]["decided_by"] == decided_by, visitor
