"""Finding 7 (issue 26): a replayed "found" verification kept an erasure open for ever. A finding of
any earlier round opened yet another round, so whoever replayed one old, genuinely signed finding
after each round kept the erasure from completing. Now a finding of a closed round is counted and
opens nothing (that round's successor already asks every store to erase and verify again)."""

from __future__ import annotations

import dataclasses

import psycopg
from kafka import KafkaProducer

from lifecycle.core.orderkeys import load_order_signer
from lifecycle.core.storekeys import register_store
from lifecycle.schemas import Codec
from tests.fix_servers import WorkerProcess
from tests.helpers import HOUR, T0, ack_headers, emit, erasure_answer, event, wait_for


def _ack(request_id, store, *, action="erase", round_=0, found=0, settings):
    nonce = load_order_signer(settings, create=False).nonce("erasure", request_id, action, round_)
    return Codec().encode("ErasureAck", {"nonce": nonce,
        "request_id": request_id, "account_id": None, "store": store,
        "status": "failed" if found else "erased" if action == "erase" else "nothing_found",
        "items_erased": 1 if action == "erase" else 0, "completed_at": T0 + 2 * HOUR,
        "error": f"{found} item(s) still held" if found else None, "action": action, "round": round_,
        "items_found": found})


def _round(settings):
    with psycopg.connect(settings.postgres_dsn) as conn:
        return conn.execute("SELECT round, state FROM erasure_requests").fetchone()


def test_a_replayed_old_finding_opens_no_new_round(settings, tmp_path):
    settings = dataclasses.replace(settings, erasure_stores=("crm", "audit"))
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        worker.start()
        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            keys = {"crm": register_store(conn, "crm"), "audit": register_store(conn, "audit")}
        acc = "acc-replayed-finding"
        emit(settings, event("account.registered", T0, account=acc, email="r@example.test", first_name="R",
                             last_name="F"), event("account.closed", T0 + HOUR, account=acc))
        wait_for(lambda: erasure_answer(worker, acc), what="the erasure open")
        rid = erasure_answer(worker, acc)["erasures"][0]["request_id"]
        topic = settings.topic("erasure-acks")

        def send(store, value):
            producer.send(topic, key=rid.encode(), value=value, headers=ack_headers(keys[store], value))
            producer.flush(30)

        for store in keys:
            send(store, _ack(rid, store, settings=settings))
        wait_for(lambda: all(s["status"] == "erased" for s in erasure_answer(worker, acc)["erasures"][0]["stores"]),
                 what="both erased")
        old_finding = _ack(rid, "crm", action="verify", found=3, settings=settings)
        send("crm", old_finding)
        wait_for(lambda: _round(settings) == (1, "open"), what="round 1 opened by crm's finding")
        send("crm", _ack(rid, "crm", round_=1, settings=settings))
        wait_for(lambda: {s["store"]: s["status"] for s in erasure_answer(worker, acc)["erasures"][0]["stores"]}
                 == {"crm": "erased", "audit": "erased"}, what="crm erased again in round 1")
        for _ in range(3):  # the attacker replays the old finding, signature and all
            producer.send(topic, key=rid.encode(), value=old_finding, headers=ack_headers(keys["crm"], old_finding))
        producer.flush(30)
        for store in keys:
            send(store, _ack(rid, store, action="verify", round_=1, settings=settings))
        wait_for(lambda: _round(settings)[1] == "complete", deadline_s=30, what="the erasure complete")
        assert _round(settings) == (1, "complete")
    finally:
        producer.close()
        worker.stop()
