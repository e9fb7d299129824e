"""Acknowledgements that cannot be forged (issue 18): an ack unsigned, signed with a made-up key, or
signed with another store's key is dead-lettered and never advances an erasure; the store's own
signature does."""

from __future__ import annotations

import dataclasses
import secrets
import time

import psycopg
from kafka import KafkaProducer

from lifecycle.core.orderkeys import load_order_signer
from lifecycle.core.storekeys import register_store, sign_ack
from lifecycle.schemas import Codec
from tests.fix_servers import WorkerProcess
from tests.helpers import HOUR, T0, ack_headers, emit, erasure_answer, event, metric, wait_for


def _ack(request_id, account, store, action="erase", settings=None):
    nonce = load_order_signer(settings, create=False).nonce("erasure", request_id, action, 0)
    return Codec().encode("ErasureAck", {"request_id": request_id, "account_id": account, "store": store,
                                         "status": "erased" if action == "erase" else "nothing_found",
                                         "items_erased": 1, "completed_at": T0 + 2 * HOUR, "error": None,
                                         "action": action, "nonce": nonce})


def _stores(worker, account):
    answer = erasure_answer(worker, account)
    return {s["store"]: s["status"] for s in answer["erasures"][0]["stores"]} if answer else {}


def test_only_the_stores_own_signature_advances_an_erasure(settings, tmp_path):
    settings = dataclasses.replace(settings, erasure_stores=("crm", "audit"))
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        worker.start()
        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            crm, audit = register_store(conn, "crm"), register_store(conn, "audit")
        acc = "acc-signed"
        emit(settings, event("account.registered", T0, account=acc, email="s@example.test", first_name="S",
                             last_name="A"),
             event("account.closed", T0 + HOUR, account=acc))
        wait_for(lambda: _stores(worker, acc) == {"crm": "pending", "audit": "pending"}, what="the erasure open")
        request_id = erasure_answer(worker, acc)["erasures"][0]["request_id"]
        topic = settings.topic("erasure-acks")
        value = _ack(request_id, acc, "crm", settings=settings)
        for headers in ([], sign_ack(secrets.token_bytes(32), value), ack_headers(audit, value)):
            producer.send(topic, key=acc.encode(), value=value, headers=headers)
        producer.flush(30)
        url = worker.url("/metrics")
        wait_for(lambda: metric(url, "lifecycle_events_rejected_total", topic="erasure-acks", reason="unsigned_ack")
                 == 1 and metric(url, "lifecycle_events_rejected_total", topic="erasure-acks",
                                 reason="bad_signature") == 2, what="three forged acks refused")
        time.sleep(1)
        assert _stores(worker, acc) == {"crm": "pending", "audit": "pending"}
        with psycopg.connect(settings.postgres_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM erasure_proofs").fetchone()[0] == 0

        producer.send(topic, key=acc.encode(), value=value, headers=ack_headers(crm, value))
        producer.flush(30)
        wait_for(lambda: _stores(worker, acc) == {"crm": "erased", "audit": "pending"}, what="crm's own ack")
        audit_ack = _ack(request_id, acc, "audit", settings=settings)
        producer.send(topic, key=acc.encode(), value=audit_ack, headers=ack_headers(audit, audit_ack))
        producer.flush(30)
        wait_for(lambda: _stores(worker, acc) == {"crm": "erased", "audit": "erased"}, what="audit's own ack")
        time.sleep(1)  # acknowledged is not complete: every store must verify first
        assert erasure_answer(worker, acc)["erasures"][0]["state"] == "open"
        for store, key in (("crm", audit), ("crm", crm), ("audit", audit)):  # the first is forged
            verified = _ack(request_id, None, store, action="verify", settings=settings)
            producer.send(topic, key=request_id.encode(), value=verified, headers=ack_headers(key, verified))
        producer.flush(30)
        wait_for(lambda: erasure_answer(worker, acc)["erasures"][0]["state"] == "complete", what="complete")
    finally:
        producer.close()
        worker.stop()
