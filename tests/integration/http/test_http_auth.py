"""Every `/v1` route needs a bearer token with its scope (issue 18), bodies are read whole up to
the cap, a slow body is cut off at its deadline while the server keeps serving.

The routes are read from the views the worker registers (streams/http/views.py PAGES), so a
route added without a line in ROUTES below, or served without its scope, fails here."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
import uuid

from lifecycle.embedded.process import free_port
from lifecycle.streams.http.views import MAX_BODY_BYTES, PAGES
from lifecycle.supervisor import http_get
from tests.fix_servers import WorkerProcess
from tests.helpers import post

# (method, route) -> scope: the documented table (docs/operations.md, "HTTP").
ROUTES = {
    ("POST", "/v1/events"): "ingest",
    ("GET", "/v1/accounts/{account_id}/erasure"): "read",
    ("GET", "/v1/accounts/{account_id}/export"): "read",
    ("GET", "/v1/subjects/{subject_id}/consent"): "read",
    ("POST", "/v1/keys"): "keys",
    ("POST", "/v1/keys/lookup"): "keys",
}


def _served_routes() -> set[tuple[str, str]]:
    """(method, route) of every view streams/http/views.py registers (its PAGES), with the methods
    the view's own classes define."""
    out = set()
    for path, view in PAGES.items():
        own = [k for k in view.__mro__ if k.__module__.startswith("lifecycle.")]
        out |= {(m.upper(), path) for m in ("get", "post", "put", "delete", "patch") if any(m in vars(k) for k in own)}
    return {r for r in out if r[1].startswith("/v1")}


def _request(url, method, token, body=None):
    if method == "GET":
        return http_get(url, timeout_s=10, token=token)[0]
    return post(url, body if body is not None else {}, token)[0]


def _tokens(settings):
    return {"ingest": settings.http_token, "read": settings.read_token, "keys": settings.keys_token}


def test_every_v1_route_needs_a_token_with_its_scope(settings, worker):
    assert _served_routes() == set(ROUTES), "a /v1 route is served that this table (and the docs) do not list"
    tokens = _tokens(settings)
    for (method, route), scope in ROUTES.items():
        url = worker.url(route.replace("{account_id}", "acc-auth").replace("{subject_id}", "acc-auth"))
        assert _request(url, method, None) == 401, (method, route)
        assert _request(url, method, "not-a-token-of-ours") == 401, (method, route)
        for other, token in tokens.items():
            if other != scope:
                assert _request(url, method, token) == 403, (method, route, other)
        assert _request(url, method, tokens[scope]) not in (401, 403), (method, route)
    assert http_get(worker.url("/healthz"))[0] == 200  # health and metrics stay open


def _batch(size: int) -> bytes:
    """1,000 valid events, padded with JSON whitespace to exactly ``size`` bytes."""
    events = [{"event_id": str(uuid.uuid4()), "event_type": "session.started", "occurred_at": 1767225600000 + i,
               "account_id": f"acc-big{i % 50}", "source": "auth", "session_id": f"s-big{i}", "ip": "198.51.100.4",
               "user_agent": "Mozilla/5.0 " + "x" * 200, "login_method": "password"} for i in range(1000)]
    body = json.dumps(events).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def test_large_valid_batches_are_read_whole_and_one_byte_over_the_cap_is_refused(settings, worker):
    for size in (500 * 1024, MAX_BODY_BYTES - 1, MAX_BODY_BYTES):
        status, answer = post(worker.url("/v1/events"), None, settings.http_token, raw=_batch(size))
        assert status == 202 and answer["accepted"] == 1000, (size, status, answer)
    status, _ = post(worker.url("/v1/events"), None, settings.http_token, raw=_batch(MAX_BODY_BYTES + 1))
    assert status == 413


def test_a_slow_body_is_cut_off_and_the_server_keeps_serving(settings, tmp_path):
    own = dataclasses.replace(settings, http_port=free_port(), http_body_timeout_s=2, http_max_in_flight=2)
    worker = WorkerProcess(own, tmp_path / "slow-worker.log")
    socks = []
    try:
        worker.start()
        for _ in range(2):  # both places taken by bodies that never come
            sock = socket.create_connection((own.http_host, own.http_port), timeout=10)
            sock.sendall(f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {own.http_token}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n[{".encode())
            socks.append(sock)
        time.sleep(0.5)
        assert post(worker.url("/v1/events"), [], own.http_token)[0] == 503  # crowded: refused at once
        assert http_get(worker.url("/healthz"))[0] == 200
        started = time.monotonic()
        for sock in socks:
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
        assert time.monotonic() - started < 5
        status, _ = post(worker.url("/v1/events"), [], own.http_token)
        assert status == 400  # served again (an empty batch is a client error, not a crowd)
    finally:
        for sock in socks:
            sock.close()
        worker.stop()
