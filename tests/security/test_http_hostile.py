"""Findings 8, 9 and 10 (issue 26), against a running worker on the real broker and PostgreSQL.

8: a value starting with ``lc1:`` passed HTTP ingest as already sealed and went to the journal and
   the input topic in clear. 9: a value sealed under another subject's key opened (the key id was
   not bound to its subject and category). 10: client errors answered 5xx (a lone surrogate,
   invalid UTF-8, a NUL in a path id, a broken Content-Encoding, a non-UTF-8 Authorization), a NUL
   in a field answered 202 and then dead-lettered, and Faust's own routes answered without a token.
Then a seeded storm of hostile requests: no 5xx, and nothing answered 202 is dead-lettered later."""

from __future__ import annotations

import base64
import json
import random
import socket
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifecycle.core.crypto import seal_with
from tests.helpers import event, metric, post, wait_for

STORM = 1500
INPUT_TOPICS = ("account-events", "session-events", "consent-events", "analytics-events")


def _raw(worker, request: bytes) -> int:
    """Send bytes as they are (no client library would send some of these) and return the status."""
    with socket.create_connection((worker.settings.http_host, worker.settings.http_port), timeout=30) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def _request(worker, method: str, path: bytes, body: bytes = b"", headers: dict[bytes, bytes] | None = None,
             token: bytes | None = None) -> int:
    lines = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
             b"Content-Length: " + str(len(body)).encode()]
    if token is not None:
        lines.append(b"Authorization: Bearer " + token)
    lines += [k + b": " + v for k, v in (headers or {}).items()]
    return _raw(worker, b"\r\n".join(lines) + b"\r\n\r\n" + body)


def _session(n: int, **fields) -> dict:
    return event("session.login_failed", int(time.time() * 1000) - 60_000, account=f"acc-storm{n % 40}",
                 ip="198.51.100.7", failure_reason="bad_password", **fields)


def _fields_of(answer) -> set:
    return {e["field"] for e in answer["errors"]} if isinstance(answer, dict) and "errors" in answer else set()


def test_hostile_requests_get_4xx_naming_the_field_never_5xx(settings, worker):
    """Finding 10."""
    events, ingest, read = worker.url("/v1/events"), settings.http_token.encode(), settings.read_token.encode()

    # 10: a lone surrogate, invalid UTF-8 and a NUL in a field: 400 naming the field, never 503 or 202.
    body = json.dumps(_session(1)).replace('"acc-storm1"', '"acc-\\ud800"').encode()
    status, answer = post(events, None, settings.http_token, raw=body)
    assert status == 400 and _fields_of(answer) == {"account_id"}, answer
    status, answer = post(events, None, settings.http_token,
                          raw=json.dumps(_session(2)).encode().replace(b"bad_password", b"bad\xed\xa0\x80"))
    assert status == 400 and _fields_of(answer) == {"failure_reason"}, answer
    assert post(events, None, settings.http_token,
                raw=json.dumps(_session(3)).encode().replace(b"bad_password", b"bad\xff"))[0] == 400
    status, answer = post(events, _session(4, source="x\u0000y"), settings.http_token)
    assert status == 400 and _fields_of(answer) == {"source"}, answer

    # 10: ids in paths.
    for path in (b"/v1/subjects/acc%00x/consent", b"/v1/accounts/acc%00x/export", b"/v1/accounts/acc%01x/erasure",
                 b"/v1/accounts/%ED%A0%80/erasure", b"/v1/subjects/%FFx/consent", b"/v1/accounts/a%C3/export"):
        assert _request(worker, "GET", path, token=read) == 400, path
    # 10: encodings and the Authorization header.
    for encoding in (b"gzip", b"br", b"deflate"):
        assert _request(worker, "POST", b"/v1/events", b"not compressed at all",
                        {b"Content-Type": b"application/json", b"Content-Encoding": encoding}, ingest) == 415
    assert _request(worker, "POST", b"/v1/events", b"{}", token=b"tok\xff\xfe") == 401
    assert _request(worker, "GET", b"/v1/accounts/acc-1/erasure", token=b"\xc3\x28") == 401
    # 10: only the documented routes answer.
    for path in (b"/", b"/router/", b"/router", b"/table/", b"/graph/", b"/stats/", b"/performance/"):
        assert _request(worker, "GET", path) == 404, path
    for path in (b"/healthz", b"/readyz", b"/metrics"):
        assert _request(worker, "GET", path) == 200, path



def test_a_value_that_looks_sealed_must_open_as_its_subjects_field(settings, worker):
    """Finding 8."""
    events = worker.url("/v1/events")
    forged = "lc1:" + "A" * 22 + ":" + base64.urlsafe_b64encode(b"marie.curie@example.org" * 2).decode()
    registered = event("account.registered", int(time.time() * 1000) - 60_000, account="acc-lc1",
                       email=forged, first_name="Marie", last_name="Curie")
    status, answer = post(events, registered, settings.http_token)
    assert status == 400 and _fields_of(answer) == {"email"}, answer



def test_a_value_sealed_under_another_subjects_key_is_refused(settings, worker):
    """Finding 9: B's email sealed under A's key (a holder of the keys token can do this) does not
    open as B's; a value sealed under B's own key is accepted as it is."""
    events = worker.url("/v1/events")
    status, keys = post(worker.url("/v1/keys"), {"subjects": [{"subject": "acc-a", "category": "account_profile"}]},
                        settings.keys_token)
    assert status == 200, keys
    a_key = keys["keys"][0]
    sealed = seal_with(AESGCM(base64.b64decode(a_key["key"])), a_key["kid"], "acc-b", "email", b"b@example.org")
    registered = event("account.registered", int(time.time() * 1000) - 60_000, account="acc-b",
                       email=sealed, first_name="B", last_name="B")
    status, answer = post(events, registered, settings.http_token)
    assert status == 400 and _fields_of(answer) == {"email"}, answer
    status, keys = post(worker.url("/v1/keys"), {"subjects": [{"subject": "acc-b", "category": "account_profile"}]},
                        settings.keys_token)
    b_key = keys["keys"][0]
    registered["event_id"] = event("x", 0)["event_id"]
    registered["email"] = seal_with(AESGCM(base64.b64decode(b_key["key"])), b_key["kid"], "acc-b", "email",
                                    b"b@example.org")
    assert post(events, registered, settings.http_token)[0] == 202


def _storm_request(rng: random.Random, n: int, token: bytes) -> tuple[str, bytes, bytes, dict[bytes, bytes], bool]:
    """(method, path, body, headers, valid) of one request of the storm."""
    valid = json.dumps(_session(n)).encode()
    kind = rng.randrange(10)
    if kind == 0:
        return "POST", b"/v1/events", valid.replace(b"bad_password", bytes([rng.choice([0xff, 0xc0, 0xed])]) + b"x"), \
            {}, False
    if kind == 1:
        return "POST", b"/v1/events", valid.replace(b'"source": "test"', b'"source": "a\\u0000b"'), {}, False
    if kind == 2:
        return "POST", b"/v1/events", valid.replace(b"acc-storm", b"acc-\\udc00"), {}, False
    if kind == 3:
        return "POST", b"/v1/events", valid, {b"Content-Encoding": rng.choice([b"gzip", b"x-unknown"])}, False
    if kind == 4:
        ident = rng.choice([b"%00", b"%ED%B0%80", b"%FF", b"a%0Ab", b"x" * 300])
        return "GET", rng.choice([b"/v1/accounts/%s/erasure", b"/v1/subjects/%s/consent"]) % ident, b"", {}, False
    if kind == 5:
        cut = rng.randrange(1, len(valid))
        return "POST", b"/v1/events", valid[:cut], {}, False
    if kind == 6:
        return "POST", b"/v1/events", valid.replace(b"198.51.100.7", b"lc1:" + b"B" * 22 + b":" + b"A" * 40), {}, False
    return "POST", b"/v1/events", valid, {b"Content-Type": b"application/json"}, True


def test_a_seeded_storm_gets_no_5xx_and_nothing_accepted_is_dead_lettered(settings, worker):
    rng = random.Random(26)
    token = settings.http_token.encode()
    statuses: dict[int, int] = {}
    accepted = 0
    for n in range(STORM):
        method, path, body, headers, valid = _storm_request(rng, n, token)
        status = _request(worker, method, path, body, headers,
                          token if path.startswith(b"/v1/events") else settings.read_token.encode())
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (status, method, path, body[:200], headers)
        if status == 202:
            assert valid, (path, body[:200], headers)
            accepted += 1
        elif valid:
            raise AssertionError(f"a valid event answered {status}")
    assert accepted > STORM // 4, statuses
    m = worker.url("/metrics")
    wait_for(lambda: metric(m, "lifecycle_events_ingested_total", topic="session-events") >= accepted,
             deadline_s=120, what="every accepted event applied")
    time.sleep(1)
    rejected = sum(metric(m, "lifecycle_events_rejected_total", topic=t) for t in INPUT_TOPICS)
    assert rejected == 0, "events answered 202 were dead-lettered by the processors"
    assert worker.proc is not None and worker.proc.poll() is None
    assert b"Traceback" not in worker.log_path.read_bytes()
