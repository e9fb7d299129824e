"""A store answers the orders of one batch in log order (connectors/base/runner.py): a verify order
of round 0 and the erase order of round 1 of the same erasure, read together, get "still held"
first and then the erasure. Erasing first answered the verify order "nothing found" about data the
store did hold, and the proof lost that store's finding (seen in CI once the connectors fetched
their next batch while erasing). Real broker, the files store, the runner in a thread."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer

from lifecycle.connectors.base.runner import run_connector
from lifecycle.connectors.files.sink import FilesSink
from lifecycle.core.keys import Keyring
from lifecycle.core.orderkeys import load_order_signer
from lifecycle.schemas import Codec
from lifecycle.schemas.registry import make_registry
from tests.helpers import T0


def test_a_verify_order_is_answered_before_the_next_round_erases(settings):
    s = dataclasses.replace(settings, store_key="ab" * 32)
    acc, rid = "acc-in-log-order", str(uuid.uuid4())
    (s.files_dir / acc).mkdir(parents=True)
    (s.files_dir / acc / "restored.txt").write_text("back from a backup")
    codec = Codec(make_registry(s.schema_registry_url), topic_prefix=s.topic_prefix)
    signer = load_order_signer(s)  # the pipeline's order key: the store acts on signed orders alone

    def order(action: str, round_: int) -> bytes:
        return codec.encode("DeletionOrder", {
            "request_id": rid, "account_id": acc, "reason": "account_closed", "issued_at": T0,
            "deadline": T0 + 30 * 86_400_000, "categories": ["documents_and_files", "billing_records"],
            "legal_hold": False, "subjects": [acc], "pseudonymise": [], "action": action, "round": round_,
            "subject_hashes": ["ab" * 32], "nonce": signer.nonce("erasure", rid, action, round_)})

    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap)
    for value in (order("verify", 0), order("erase", 1)):  # before the store runs: one batch
        producer.send(s.topic("tombstones"), key=acc.encode(), value=value, headers=signer.headers(value))
    producer.flush(10)
    producer.close()

    stop = threading.Event()
    runner = threading.Thread(target=run_connector,
                              args=(s, FilesSink(s.files_dir, Keyring((b"sixteen-byte-key-for-tests",))), stop))
    runner.start()
    consumer = KafkaConsumer(s.topic("erasure-acks"), bootstrap_servers=s.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=500)
    acks: list[dict] = []
    try:
        end = time.monotonic() + 30
        while len(acks) < 2 and time.monotonic() < end:
            acks += [codec.decode(m.value, topic="erasure-acks").value for m in consumer]
    finally:
        consumer.close()
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
    answers = {(a["action"], a["round"]): a for a in acks}
    assert answers[("verify", 0)]["status"] == "failed" and answers[("verify", 0)]["items_found"] == 1
    assert answers[("erase", 1)]["status"] == "erased" and answers[("erase", 1)]["items_erased"] == 1
    assert not (s.files_dir / acc).exists()
