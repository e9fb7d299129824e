"""POST /v1/events as an upstream service uses it, and as an attacker or a buggy client does."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from tests.helpers import T0, event, metric, post, wait_for


def _good(n=0):
    return event("session.file_transferred", T0 + n, account="acc-h", session_id="sh", mime_type="text/csv",
                 size_bytes=100 + n)


def test_a_valid_batch_is_accepted_after_the_broker_has_it(settings, worker):
    batch = [_good(i) for i in range(5)]
    status, body = post(worker.url("/v1/events"), batch, settings.http_token)
    assert status == 202
    assert body == {"accepted": 5, "event_ids": [e["event_id"] for e in batch]}
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_ingested_total",
                            event_type="session.file_transferred") == 5, what="ingestion")


def test_one_bad_event_in_a_batch_is_named_exactly_and_nothing_is_sent(settings, worker):
    bad = _good(1)
    bad["size_bytes"] = "big"
    status, body = post(worker.url("/v1/events"), [_good(0), bad, _good(2)], settings.http_token)
    assert status == 400
    assert body == {"errors": [{"index": 1, "field": "size_bytes", "problem": "expected an integer"}]}
    status, _ = post(worker.url("/v1/events"), [_good(3)], settings.http_token)
    assert status == 202
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_ingested_total",
                            event_type="session.file_transferred") == 1, what="only the later event")


def test_tokens(settings, worker):
    url = worker.url("/v1/events")
    assert post(url, _good(), None)[0] == 401
    assert post(url, _good(), "wrong")[0] == 401
    assert post(url, _good(), settings.http_token + "x")[0] == 401
    assert post(url, _good(), settings.http_token)[0] == 202


def test_errors_never_echo_values(settings, worker):
    seeded = "leak.check@example.org"
    status, body = post(worker.url("/v1/events"),
                        {**event("account.registered", T0, account="a"), "email": seeded, "first_name": 7,
                         "last_name": seeded * 2000}, settings.http_token)
    assert status == 400
    assert seeded not in json.dumps(body)
    assert {e["field"] for e in body["errors"]} == {"first_name", "last_name"}


def test_oversized_and_non_json_bodies(settings, worker):
    url = worker.url("/v1/events")
    assert post(url, None, settings.http_token, raw=b"\xff\xfe not json")[0] == 400
    assert post(url, None, settings.http_token, raw=b"[" * 100_000)[0] == 400
    assert post(url, None, settings.http_token, raw=b'"' + b"x" * (1 << 20) + b'"')[0] == 413
    assert post(url, [], settings.http_token)[0] == 400


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=8),
    max_leaves=30,
)
_mutated = st.builds(
    lambda base, key, value: {**base, key: value},
    st.sampled_from([_good(0), event("consent.cookies_granted", T0, visitor="v", purposes=["analytics"],
                                     policy_version="1"), event("analytics.page_viewed", T0, visitor="v", path="/")]),
    st.sampled_from(["event_id", "event_type", "occurred_at", "account_id", "visitor_id", "source", "purposes",
                     "size_bytes", "path", "unknown"]),
    _json,
)


def test_fuzzed_bodies_never_get_a_500(settings, worker):
    url = worker.url("/v1/events")

    @hyp_settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=st.one_of(_json, _mutated, st.lists(_mutated, max_size=4)))
    def check(body):
        status, answer = post(url, body, settings.http_token)
        assert status in (202, 400), (status, answer)
        if status == 400:
            assert answer["errors"] and all({"index", "field", "problem"} <= set(e) for e in answer["errors"])

    check()
    @hyp_settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=st.binary(max_size=300))
    def check_raw(raw):
        assert post(url, None, settings.http_token, raw=raw)[0] in (202, 400)

    check_raw()
    assert worker.alive()
