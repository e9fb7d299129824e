"""Finding 1 (issue 26): connectors acted on any order that decoded. With a plain Kafka client (the
5-byte header of a genuine order copied), DeletionOrders with request ids ``../../victim`` made the
files store delete folders outside its root; an AccessOrder carrying the attacker's own answer key
was answered by every store; and one order with request id ``not-a-uuid`` crashed the PostgreSQL
and mailing-list connectors, again on every restart, until `up` stopped the whole stack.

Here, against a worker and every built-in connector on the real broker and PostgreSQL: unsigned
orders, orders whose signature was copied from a genuine one, and orders signed with the pipeline's
own key but malformed change nothing in any store, are dead-lettered with their reason and counted,
and every connector keeps running and still completes a genuine erasure afterwards."""

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
from tests.helpers import HOUR, T0, emit, erasure_answer, event, metric, wait_for


def _deletion(request_id: str, account: str, **changes) -> dict:
    return {"request_id": request_id, "account_id": account, "reason": "account_closed", "issued_at": T0,
            "deadline": T0 + 30 * 86_400_000, "categories": [], "legal_hold": False, "subjects": [account],
            "pseudonymise": [], "action": "erase", "round": 0, "subject_hashes": [], **changes}


def _records(settings, topic: str) -> list:
    consumer = KafkaConsumer(settings.topic(topic), bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=1500)
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_hostile_orders_change_nothing_and_stop_no_connector(settings, worker, connectors, tmp_path):
    codec, signer = Codec(), load_order_signer(settings, create=False)
    victim = tmp_path / "victim"  # beside the files store's root, as ../victim is from its trash folder
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    live = "acc-live-victim"
    (settings.files_dir / live).mkdir(parents=True)
    (settings.files_dir / live / "contract.pdf").write_text("the live account's file")
    emit(settings, event("account.registered", T0, account=live, email="live@example.test", first_name="L",
                         last_name="V"))

    sent: list[tuple[str, bytes, list]] = []
    genuine = codec.encode("DeletionOrder", _deletion(str(uuid.uuid4()), "acc-nobody"))
    copied = signer.headers(genuine)  # a real signature, lifted from a genuine order
    for rid in ("../../victim", "../victim", str(victim), "not-a-uuid"):
        value = codec.encode("DeletionOrder", _deletion(rid, live))
        sent += [("tombstones", value, []), ("tombstones", value, copied)]
    attacker_key = bytes(range(32))
    access = codec.encode("AccessOrder", {"request_id": str(uuid.uuid4()), "account_id": live, "subjects": [live],
                                          "issued_at": T0, "deadline": T0 + HOUR, "answer_key": attacker_key})
    sent += [("access-orders", access, []), ("access-orders", access, copied)]
    sweep = codec.encode("RetentionOrder", {"order_id": str(uuid.uuid4()), "category": "billing_records",
                                            "cutoff": 2**40, "action": "erase", "issued_at": T0, "held_accounts": []})
    sent += [("retention-orders", sweep, [])]
    # Signed by the pipeline's key but malformed (a bug upstream, or a stolen key): parsed strictly.
    for bad in (_deletion("not-a-uuid", live), _deletion(str(uuid.uuid4()), "../../victim"),
                _deletion(str(uuid.uuid4()), live, subject_hashes=["h"]), _deletion(str(uuid.uuid4()), "a\u0000b")):
        value = codec.encode("DeletionOrder", bad)
        sent.append(("tombstones", value, signer.headers(value)))

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        for topic, value, headers in sent:
            producer.send(settings.topic(topic), key=live.encode(), value=value, headers=headers)
        producer.flush(30)
    finally:
        producer.close()

    def refused(store: str) -> float:
        url = f"http://127.0.0.1:{connectors[store].extra_env['LIFECYCLE_METRICS_PORT']}/metrics"
        try:
            return sum(metric(url, "lifecycle_connector_orders_rejected_total", store=store, reason=r)
                       for r in ("unsigned_order", "bad_signature", "invalid_order"))
        except OSError:  # not serving yet
            return -1

    # Each store reads every order: 4 x 2 deletion orders, 2 access orders, 1 sweep, 3 malformed; the
    # signed order for an account named "../../victim" is the pipeline's own (its id is any text): the
    # files store answers it nothing_found, its folder name refused, and nothing outside its root moves.
    for store in connectors:
        wait_for(lambda s=store: refused(s) == 14, deadline_s=60, what=f"{store} refusing fourteen orders")
    assert all(proc.alive() for proc in connectors.values())
    assert (victim / "precious.txt").read_text() == "keep me"
    assert (settings.files_dir / live / "contract.pdf").exists()
    assert list(tmp_path.rglob("victim*.json")) == []  # no receipt written outside the store's folders
    answers = [codec.decode(m.value, topic="erasure-acks") for m in _records(settings, "erasure-acks")]
    assert [a for a in answers if a.record.short_name == "AccessAnswer"] == []
    assert [a for a in answers if a.value.get("account_id") == live] == []
    letters = [codec.decode(m.value, topic="dead-letters").value for m in _records(settings, "dead-letters")]
    ours = [d for d in letters if d["stage"].startswith("store-")]
    assert len(ours) == 14 * len(connectors)
    assert all(d["original_value"] is None and d["original_key"] is None for d in ours)
    assert {d["reason"].split(":")[0] for d in ours} == {"unsigned_order", "bad_signature", "invalid_order"}

    # Every connector still serves the pipeline: a genuine closure completes across every store.
    emit(settings, event("account.closed", T0 + HOUR, account=live))
    wait_for(lambda: (a := erasure_answer(worker, live)) and a["erasures"][0]["state"] == "complete",
             deadline_s=90, what="the genuine erasure complete")
    assert not (settings.files_dir / live).exists() and (victim / "precious.txt").exists()


class _BrittleFiles(FilesSink):
    """The files store, failing for one account with an error no retry mends."""

    def erase(self, orders):
        if any(o.account_id == "acc-poison" for o in orders):
            raise RuntimeError("the store choked on this one")
        return super().erase(orders)


def test_an_order_the_store_cannot_carry_out_is_answered_failed_and_stops_nothing(settings):
    """An order that passes every check but makes the store fail for good no longer crashes the
    connector (again on every restart): each order of the batch alone, that one answered failed."""
    s = dataclasses.replace(settings, store_key="ab" * 32)
    codec, signer = Codec(), load_order_signer(s)
    (s.files_dir / "acc-fine").mkdir(parents=True)
    (s.files_dir / "acc-fine" / "a.txt").write_text("x")
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap)
    for account in ("acc-poison", "acc-fine"):
        rid = str(uuid.uuid4())
        value = codec.encode("DeletionOrder", _deletion(rid, account, nonce=signer.nonce("erasure", rid, "erase", 0)))
        producer.send(s.topic("tombstones"), key=account.encode(), value=value, headers=signer.headers(value))
    producer.flush(10)
    producer.close()
    stop = threading.Event()
    sink = _BrittleFiles(s.files_dir, Keyring((b"sixteen-byte-key!",)))
    runner = threading.Thread(target=run_connector, args=(s, sink, stop))
    runner.start()
    acks: list[dict] = []
    consumer = KafkaConsumer(s.topic("erasure-acks"), bootstrap_servers=s.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=500)
    try:
        end = time.monotonic() + 30
        while len(acks) < 2 and time.monotonic() < end:
            acks += [codec.decode(m.value, topic="erasure-acks").value for m in consumer]
        assert runner.is_alive()
    finally:
        consumer.close()
        stop.set()
        runner.join(30)
    by_account = {a["account_id"]: a for a in acks}
    assert by_account["acc-fine"]["status"] == "erased" and not (s.files_dir / "acc-fine").exists()
    assert by_account["acc-poison"]["status"] == "failed"
    assert by_account["acc-poison"]["error"] == "store error: RuntimeError"
