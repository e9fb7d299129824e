"""Finding 6 (issue 26): a store's ack key was a shared secret the pipeline also held (HMAC, wrapped by
the master key), so whoever held the master key could acknowledge for any store. Now `lifecycle
store add` makes an Ed25519 pair and the pipeline keeps only the public half. Existing HMAC keys
are accepted until `store add --rotate` gives the store a signing key, then refused."""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys

import psycopg
from kafka import KafkaProducer

from lifecycle.core.datakeys import open_data_keys
from lifecycle.core.orderkeys import load_order_signer
from lifecycle.core.storekeys import AckSigner, sign_ack
from lifecycle.schemas import Codec
from tests.fix_servers import WorkerProcess
from tests.helpers import HOUR, T0, ack_headers, emit, erasure_answer, event, metric, wait_for


def _ack(settings, request_id, account):
    return Codec().encode("ErasureAck", {
        "request_id": request_id, "account_id": account, "store": "crm", "status": "erased", "items_erased": 1,
        "completed_at": T0 + 2 * HOUR, "error": None, "action": "erase",
        "nonce": load_order_signer(settings, create=False).nonce("erasure", request_id, "erase", 0)})


def _crm(worker, account):
    answer = erasure_answer(worker, account)
    return answer["erasures"][0]["stores"][0]["status"] if answer else None


def test_a_legacy_hmac_key_works_until_the_store_gets_a_signing_key(settings, tmp_path):
    settings = dataclasses.replace(settings, erasure_stores=("crm",))
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    topic = settings.topic("erasure-acks")

    def close(account):
        emit(settings, event("account.registered", T0, account=account, email=f"{account}@example.test",
                             first_name="K", last_name="M"), event("account.closed", T0 + HOUR, account=account))
        wait_for(lambda: _crm(worker, account) == "pending", what=f"the erasure of {account} open")
        return erasure_answer(worker, account)["erasures"][0]["request_id"]

    def send(value, headers):
        producer.send(topic, key=b"crm", value=value, headers=headers)
        producer.flush(30)

    try:
        worker.start()
        legacy = secrets.token_bytes(32)  # what a store registered before issue 26 holds
        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            wrapped = open_data_keys(settings, create=False).wrapper.wrap("crm", "store-key", "acknowledgements",
                                                                          legacy)
            conn.execute("INSERT INTO store_keys (store, wrapped) VALUES ('crm', %s)", (wrapped,))
        first = close("acc-before-migration")
        value = _ack(settings, first, "acc-before-migration")
        send(value, sign_ack(legacy, value))
        wait_for(lambda: _crm(worker, "acc-before-migration") == "erased", what="the legacy-signed ack accepted")

        key_file = tmp_path / "crm.key"
        added = subprocess.run([sys.executable, "-m", "lifecycle", "store", "add", "crm", "--rotate", "--out",
                                str(key_file)], env={**os.environ, **settings.to_env()}, capture_output=True,
                               timeout=60)
        assert added.returncode == 0, added.stderr.decode()
        signer = AckSigner(key_file.read_text(), str(key_file))
        second = close("acc-after-migration")
        value = _ack(settings, second, "acc-after-migration")
        send(value, sign_ack(legacy, value))  # the old HMAC key: refused from now on
        url = worker.url("/metrics")
        wait_for(lambda: metric(url, "lifecycle_events_rejected_total", topic="erasure-acks", reason="bad_signature")
                 >= 1, what="the legacy signature refused")
        assert _crm(worker, "acc-after-migration") == "pending"
        send(value, ack_headers(signer, value))
        wait_for(lambda: _crm(worker, "acc-after-migration") == "erased", what="the store's own signature")

        # The pipeline keeps the public half alone: nothing it holds can sign for the store.
        with psycopg.connect(settings.postgres_dsn) as conn:
            wrapped_left, public = conn.execute("SELECT wrapped, public_key FROM store_keys WHERE store = 'crm'"
                                                ).fetchone()
        assert wrapped_left is None and public == signer.public and len(public) == 32
        private_hex = signer.text.split(":", 1)[1].encode()
        held = [p for p in settings.state_dir.rglob("*") if p.is_file() and private_hex in p.read_bytes()]
        assert held == []
    finally:
        producer.close()
        worker.stop()
