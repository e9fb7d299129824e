"""Art. 12(3) extensions (issue 29) on the real broker and PostgreSQL: `lifecycle request extend`
moves an open erasure's or access request's deadline by at most two months, once; the overdue
gauge (what the alerts read) follows; the person is told through a RequestExtended notice on
request-notices; a second extension, one past the limit, and one of a closed request are refused
with a clear error; a certificate carries the extension and verifies offline."""

from __future__ import annotations

import dataclasses

import psycopg
from kafka import KafkaConsumer

from lifecycle.embedded.process import free_port
from lifecycle.schemas.codec import Codec
from lifecycle.schemas.registry import make_registry
from lifecycle.store_registry import join, leave
from tests.fix_servers import ChildProcess
from tests.helpers import DAY, HOUR, T0, emit, erasure_answer, event, lifecycle_cli, metric, wait_for

REASON = "Many requests this month; your data is in five systems."


def _extend(settings, request_id, months="2", reason=REASON):
    return lifecycle_cli(settings, "request", "extend", request_id, "--months", months, "--reason", reason,
                         "--by", "privacy team")


def _notices(settings):
    codec = Codec(make_registry(None), topic_prefix=settings.topic_prefix)
    consumer = KafkaConsumer(settings.topic("request-notices"), bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        return [codec.decode(m.value).value for m in consumer]
    finally:
        consumer.close()


def test_an_extension_moves_the_deadline_once_and_the_person_is_told(settings, worker, tmp_path):
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        join(settings.postgres_dsn, conn, "slow-crm")  # a store that has not answered yet
    emit(settings, event("account.registered", T0, account="acc-ext", email="e@example.test", first_name="E",
                         last_name="X"),
         event("account.closed", T0 + HOUR, account="acc-ext"),
         event("account.registered", T0 + 31 * DAY, account="acc-clock", email="c@example.test", first_name="C",
               last_name="K"))  # the event clock moves past the 30-day deadline
    answer = wait_for(lambda: (a := erasure_answer(worker, "acc-ext")) and a["erasures"][0]["overdue"] and a,
                      deadline_s=60, what="the erasure overdue")
    [erasure] = answer["erasures"]
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_erasure_requests_overdue") == 1, deadline_s=30,
             what="the overdue gauge")

    assert _extend(settings, erasure["request_id"], months="3").returncode == 2  # past the limit
    refused = _extend(settings, erasure["request_id"], reason="")
    assert refused.returncode == 2 and b"--reason" in refused.stderr
    done = _extend(settings, erasure["request_id"])
    assert done.returncode == 0, done.stderr.decode()
    again = _extend(settings, erasure["request_id"], months="1")
    assert again.returncode == 2 and b"allows one extension" in again.stderr

    extended = wait_for(lambda: (a := erasure_answer(worker, "acc-ext")) and not a["erasures"][0]["overdue"] and a,
                        deadline_s=30, what="the erasure no longer overdue")["erasures"][0]
    assert extended["deadline"] > erasure["deadline"]
    assert (extended["extension"]["months"], extended["extension"]["reason"]) == (2, REASON)
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_erasure_requests_overdue") == 0, deadline_s=30,
             what="the overdue gauge to follow the new deadline")
    notices = wait_for(lambda: _notices(settings), deadline_s=30, what="the notice on request-notices")
    assert [(n["request_id"], n["kind"], n["months"], n["reason"]) for n in notices] == \
        [(erasure["request_id"], "erasure", 2, REASON)]
    assert "acc-ext" not in repr(notices)

    # The store answers at last: the erasure completes, and its certificate names the extension.
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        leave(conn, "slow-crm")
        conn.execute("DELETE FROM erasure_progress WHERE store = 'slow-crm'")  # stands in for its answer
    stores = [ChildProcess(settings, tmp_path / f"connector-{s}.log", ["connector", s],
                           {"LIFECYCLE_METRICS_PORT": str(free_port())}) for s in settings.erasure_stores]
    try:
        for store in stores:
            store.spawn()
        wait_for(lambda: (a := erasure_answer(worker, "acc-ext")) and a["erasures"][0]["state"] == "complete",
                 deadline_s=90, what="the erasure complete")
    finally:
        for store in stores:
            store.stop()
    cert = tmp_path / "certificate.json"
    assert lifecycle_cli(settings, "proof", "export", erasure["request_id"], "--out", str(cert)).returncode == 0
    key = tmp_path / "proof.pub"
    key.write_bytes(lifecycle_cli(settings, "proof", "key", "--raw").stdout)
    stores_file = tmp_path / "stores.json"
    stores_file.write_bytes(lifecycle_cli(settings, "store", "keys").stdout)
    offline = dataclasses.replace(settings, postgres_dsn=None, kafka_bootstrap=None, state_dir=tmp_path / "auditor")
    checked = lifecycle_cli(offline, "proof", "verify", str(cert), "--public-key", str(key), "--store-keys",
                            str(stores_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert b"deadline extended by 2 month(s)" in checked.stdout and REASON.encode() in checked.stdout
    closed = _extend(settings, erasure["request_id"])
    assert closed.returncode == 2


def test_an_access_request_is_extended_too(settings, worker):
    from lifecycle.supervisor import http_get

    emit(settings, event("account.registered", T0, account="acc-ext-a", email="a@example.test", first_name="A",
                         last_name="X"))
    wait_for(lambda: http_get(worker.url("/v1/accounts/acc-ext-a/export"), 10, settings.read_token)[0] == 202,
             deadline_s=30, what="the access request open (no store answers: none runs)")
    with psycopg.connect(settings.postgres_dsn) as conn:
        [(rid,)] = conn.execute("SELECT request_id::text FROM access_requests").fetchall()
    assert _extend(settings, rid, months="1").returncode == 0
    import json

    status, body = http_get(worker.url("/v1/accounts/acc-ext-a/export"), 10, settings.read_token)
    assert status == 202 and json.loads(body)["extension"]["months"] == 1
    assert _extend(settings, "5b0f3c1e-8a4e-4a8e-9a35-6a2f3c0d9e11").returncode == 2  # no such request
