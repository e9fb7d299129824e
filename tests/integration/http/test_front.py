"""`lifecycle front` (streams/http/front.py): `POST /v1/events` in a process of its own, beside a
worker that applies what it accepts; driven from outside, as a load balancer's clients would."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from lifecycle.embedded.process import free_port
from lifecycle.supervisor import http_get
from tests.fix_servers import ChildProcess
from tests.helpers import T0, event, metric, post, records, wait_for

SEEDED = "front.leak@example.org"


class FrontProcess(ChildProcess):
    def __init__(self, settings, log_path: Path):
        self.port = free_port()
        super().__init__(settings, log_path, ["front", "--port", str(self.port)])

    def url(self, path: str) -> str:
        return f"http://{self.settings.http_host}:{self.port}{path}"

    def start(self, deadline_s: float = 60) -> None:
        self.spawn()
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            assert self.alive(), f"the front exited early; see {self.log_path}"
            try:
                if http_get(self.url("/readyz"))[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the front was not ready within {deadline_s} s; see {self.log_path}")


@pytest.fixture
def front(settings, worker, tmp_path) -> Iterator[FrontProcess]:
    f = FrontProcess(settings, tmp_path / "front.log")
    try:
        f.start()
        yield f
    finally:
        f.stop()


def _file(n: int) -> dict:
    return event("session.file_transferred", T0 + n, account="acc-front", session_id="sf", mime_type="text/csv",
                 size_bytes=100 + n)


def _journal(settings) -> int:
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM ingest_journal").fetchone()[0]


def test_a_front_accepts_sealed_and_the_worker_applies(settings, worker, front):
    batch = [_file(i) for i in range(5)]
    registered = event("account.registered", T0, account="acc-front", email=SEEDED, first_name="F", last_name="R")
    status, body = post(front.url("/v1/events"), [*batch, registered], settings.http_token)
    assert status == 202, body
    assert body == {"accepted": 6, "event_ids": [e["event_id"] for e in [*batch, registered]]}
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_ingested_total",
                            event_type="session.file_transferred") == 5, what="the worker applied them")
    wait_for(lambda: _journal(settings) == 0, what="the journal emptied")
    assert metric(front.url("/metrics"), "lifecycle_front_events_accepted_total") == 6
    # Sealed before it left the front: the address is nowhere on the topic in clear.
    values = [value or b"" for _, value in records(settings, "account-events")]
    assert len(values) == 1 and b"lc1:" in values[0]
    assert not any(SEEDED.encode() in value for value in values)


def test_a_front_refuses_as_the_worker_does_and_holds_only_ingest_tokens(settings, worker, front):
    url = front.url("/v1/events")
    bad = _file(1)
    bad["size_bytes"] = "big"
    assert post(url, [_file(0), bad], settings.http_token) == (
        400, {"errors": [{"index": 1, "field": "size_bytes", "problem": "expected an integer"}]})
    assert post(url, _file(2), None)[0] == 401
    # The other scopes' tokens are no tokens of a front's.
    assert post(url, _file(2), settings.read_token)[0] == 401
    assert post(front.url("/v1/keys"), {"subjects": []}, settings.keys_token)[0] == 401
    assert http_get(front.url("/v1/accounts/acc-front/consent"), token=settings.read_token)[0] == 401
    assert http_get(front.url("/openapi.json"))[0] == 404
    assert post(url, None, settings.http_token, raw=b"\xff not json")[0] == 400
    assert metric(front.url("/metrics"), "lifecycle_http_refused_total", reason="unauthorized") == 4
    assert metric(front.url("/metrics"), "lifecycle_events_rejected_total", reason="invalid_event") == 1
    assert metric(front.url("/metrics"), "lifecycle_front_events_accepted_total") == 0
    assert _journal(settings) == 0


def test_sigterm_stops_a_front_and_loses_nothing_it_answered(settings, worker, front):
    accepted = 0
    for round_ in range(10):
        status, body = post(front.url("/v1/events"), [_file(round_ * 50 + i) for i in range(50)],
                            settings.http_token)
        assert status == 202, body
        accepted += body["accepted"]
    assert front.proc is not None
    front.proc.send_signal(signal.SIGTERM)
    assert front.proc.wait(15) == 0
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_ingested_total",
                            event_type="session.file_transferred") == accepted, what="everything answered 202")
    wait_for(lambda: _journal(settings) == 0, what="the journal emptied")
