"""Finding 2 (issue 26): one malformed RetentionAck stalled the acks loop for good. Retention acks
were applied together with no range check and no isolation; a time of 2**62 ms, a NUL in
``error`` or a negative ``items_erased`` raised, and the loop read the same batch again for ever,
so no erasure whose acks share that partition completed. On the real broker and PostgreSQL: the
bad acks are dead-lettered and counted, and the good ack behind them on the same partition
advances its erasure."""

from __future__ import annotations

import dataclasses
import uuid

import psycopg
from kafka import KafkaProducer

from lifecycle.core.orderkeys import load_order_signer
from lifecycle.core.storekeys import register_store
from lifecycle.schemas import Codec
from tests.fix_servers import WorkerProcess
from tests.helpers import HOUR, T0, ack_headers, emit, erasure_answer, event, metric, wait_for


def _retention_ack(settings, **changes):
    value = {"order_id": str(uuid.uuid4()), "store": "crm", "category": "billing_records", "cutoff": T0,
             "items_erased": 1, "oldest_remaining": None, "completed_at": T0 + HOUR, "error": None, **changes}
    value["nonce"] = load_order_signer(settings, create=False).nonce("retention", value["order_id"])
    return Codec().encode("RetentionAck", value)


def test_malformed_retention_acks_are_dead_lettered_and_block_nothing(settings, tmp_path):
    settings = dataclasses.replace(settings, erasure_stores=("crm",))
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        worker.start()
        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            crm = register_store(conn, "crm")
        acc = "acc-stall"
        emit(settings, event("account.registered", T0, account=acc, email="st@example.test", first_name="S",
                             last_name="T"), event("account.closed", T0 + HOUR, account=acc))
        wait_for(lambda: erasure_answer(worker, acc), what="the erasure open")
        request_id = erasure_answer(worker, acc)["erasures"][0]["request_id"]
        topic, same_partition = settings.topic("erasure-acks"), b"one-key"
        s = settings
        for bad in (_retention_ack(s, completed_at=2**62), _retention_ack(s, error="disk\u0000full"),
                    _retention_ack(s, items_erased=-5), _retention_ack(s, cutoff=2**62),
                    _retention_ack(s, order_id="x")):
            producer.send(topic, key=same_partition, value=bad, headers=crm.headers(bad))
        good = Codec().encode("ErasureAck", {
            "request_id": request_id, "account_id": acc, "store": "crm", "status": "erased", "items_erased": 1,
            "completed_at": T0 + 2 * HOUR, "error": None, "action": "erase",
            "nonce": load_order_signer(settings, create=False).nonce("erasure", request_id, "erase", 0)})
        producer.send(topic, key=same_partition, value=good, headers=ack_headers(crm, good))
        producer.flush(30)
        url = worker.url("/metrics")
        wait_for(lambda: metric(url, "lifecycle_events_rejected_total", topic="erasure-acks",
                                reason="invalid_ack") == 5, what="five malformed retention acks dead-lettered")
        wait_for(lambda: erasure_answer(worker, acc)["erasures"][0]["stores"][0]["status"] == "erased",
                 what="the good ack behind them applied")
        assert worker.proc is not None and worker.proc.poll() is None
    finally:
        producer.close()
        worker.stop()
