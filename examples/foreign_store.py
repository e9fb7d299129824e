#!/usr/bin/env python3
"""A downstream store written by another team, joining the erasure protocol on the topics alone.

It uses no code of this project: kafka-python, fastavro, cryptography and the published .avsc
files. The store itself is a JSON file mapping account ids to records (a stand-in for any database).

    lifecycle store add crm --out crm.key     # once, by the pipeline's operator: the store's ack key
    lifecycle orders key --raw > order.pub    # the pipeline's public order key, published
    python examples/foreign_store.py --bootstrap 127.0.0.1:9092 --store crm --data crm.json --key-file crm.key \
        --order-key order.pub

Register the store with the pipeline first: `lifecycle store add crm` hands over the private half
of the Ed25519 key it signs its acks with ("ed25519:" + base64 of the signature of the ack's bytes,
header lifecycle.signature; the pipeline keeps only the public half, and an unsigned or wrongly
signed ack is refused), and from then on every erasure opened waits for the store (nothing else
to configure; `lifecycle up` does not start it: you run it).

The protocol (docs/protocol.md, the whole of it on one page; docs/security.md):
  1. consume <prefix>tombstones with a consumer group of your own; act on an order only when its
     header lifecycle.order-signature (base64) is an Ed25519 signature of the record's value bytes
     under the pipeline's published order key; otherwise leave it (the pipeline never sent it);
  2. delete everything the store holds for the order's account_id (and the ids in `subjects`);
  3. only after that delete is durable, produce an ErasureAck to <prefix>erasure-acks, keyed by
     account_id: status erased / nothing_found / retained_legal_hold / failed, items_erased,
     echoing the order's `nonce`, signed with the store's key (header lifecycle.signature), with
     its receipt statement signed too (header lifecycle.receipt-signature; docs/security.md);
  4. then commit the offset. A redelivered order must be acknowledged again.
An order with action `verify` asks the store to look again and delete nothing: answer with the
same action and round, status nothing_found and items_found 0 when nothing of the subjects is
left, status failed and items_found N when N items are. The erasure completes only when every
store has verified. An order whose account_id is empty names its subjects by keyed hashes alone
(`subject_hashes`, a later check of a completed erasure); a store that cannot compute those
hashes answers failed (unchecked), as this one does. A new `round` means: erase again, even if
the store has a receipt for the request.

Access orders (docs/access.md) come on <prefix>access-orders: answer with AccessAnswer records on
<prefix>erasure-acks, signed the same way, holding one JSON document ({"store", "holds",
"items", "data"}) cut into parts, each sealed to the order's answer_key: a fresh X25519 key,
HKDF-SHA256 (salt: its public key then the answer key; info "lifecycle-access-answer/1") into an
AES-256-GCM key, associated data "request_id NUL store NUL part NUL parts"; the part is the
ephemeral public key, the 12-byte nonce and the ciphertext.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import struct
import time
from pathlib import Path

import fastavro
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastavro.schema import fingerprint, to_parsing_canonical_form
from kafka import KafkaConsumer, KafkaProducer

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "avro"


def schema_id(schema: dict) -> int:
    """The built-in registry's id rule (docs/schemas.md)."""
    # The Avro specification's CRC-64-AVRO of the Parsing Canonical Form, as a number (Java's
    # parsingFingerprint64); fastavro gives its 8 bytes little-endian.
    v = int.from_bytes(bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")), "little")
    return ((v ^ (v >> 31) ^ (v >> 62)) & 0x7FFFFFFF) or 1


def seal(answer_key: bytes, part: bytes, aad: bytes) -> bytes:
    """One part of an access answer sealed to the order's key (the format above)."""
    mine = X25519PrivateKey.generate()
    ephemeral = mine.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    shared = mine.exchange(X25519PublicKey.from_public_bytes(answer_key))
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + answer_key,
               info=b"lifecycle-access-answer/1").derive(shared)
    nonce = os.urandom(12)
    return ephemeral + nonce + AESGCM(key).encrypt(nonce, part, aad)


def access_answer(order: dict, store: dict, name: str, schema: dict, schema_id_: int) -> bytes:
    """What this store holds about the order's subjects, as one AccessAnswer (one part suffices
    for a small store; a large one cuts the document into parts of a few hundred KB)."""
    ids = set(order["subjects"]) | {order["account_id"]}
    records = {i: store[i] for i in sorted(ids) if i in store}
    items = sum(len(v) for v in records.values())
    document = json.dumps({"store": name, "holds": ["account_profile"], "items": items,
                           "data": {"records": records}}).encode()
    aad = f"{order['request_id']}\0{name}\0{0}\0{1}".encode()
    answer = {"request_id": order["request_id"], "store": name, "part": 0, "parts": 1, "items": items,
              "sealed": seal(order["answer_key"], document, aad), "completed_at": int(time.time() * 1000),
              "error": None, "nonce": order.get("nonce", "")}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, answer)
    return struct.pack(">bI", 0, schema_id_) + body.getvalue()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", default="lifecycle.")
    p.add_argument("--store", default="crm")
    p.add_argument("--data", required=True, help="the store: a JSON file {account_id: [records]}")
    p.add_argument("--key-file", required=True,
                   help="the store's ack key, hex (from `lifecycle store add NAME --out FILE`)")
    p.add_argument("--order-key", required=True,
                   help="the pipeline's public order key, base64 (from `lifecycle orders key --raw`)")
    args = p.parse_args()
    key_text = Path(args.key_file).read_text().strip()  # "ed25519:" + the private key's 32 bytes in hex
    ack_key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key_text.removeprefix("ed25519:")))

    def signature_of(value: bytes) -> bytes:
        """Signed with the store's own key, which only the store holds (docs/security.md)."""
        return b"ed25519:" + base64.b64encode(ack_key.sign(value))
    order_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(Path(args.order_key).read_text().strip()))

    def signed_by_the_pipeline(msg) -> bool:
        given = [v for k, v in msg.headers or [] if k == "lifecycle.order-signature"]
        try:
            order_key.verify(base64.b64decode(given[0], validate=True), msg.value)
            return len(given) == 1
        except (IndexError, ValueError, InvalidSignature):
            return False

    order_schema = fastavro.parse_schema(json.loads((SCHEMAS / "DeletionOrder.avsc").read_text()))
    access_schema = fastavro.parse_schema(json.loads((SCHEMAS / "AccessOrder.avsc").read_text()))
    ack_raw = json.loads((SCHEMAS / "ErasureAck.avsc").read_text())
    ack_schema, ack_id = fastavro.parse_schema(ack_raw), schema_id(ack_raw)
    answer_raw = json.loads((SCHEMAS / "AccessAnswer.avsc").read_text())
    answer_schema, answer_id = fastavro.parse_schema(answer_raw), schema_id(answer_raw)

    consumer = KafkaConsumer(f"{args.prefix}tombstones", f"{args.prefix}access-orders",
                             bootstrap_servers=args.bootstrap,
                             group_id=f"{args.prefix}store-{args.store}", enable_auto_commit=False,
                             auto_offset_reset="earliest", session_timeout_ms=6000)
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    data_path = Path(args.data)
    while not stopping:
        for batch in consumer.poll(timeout_ms=500).values():
            for msg in batch:
                if msg.value is None or msg.value[0] != 0 or not signed_by_the_pipeline(msg):
                    continue  # not an order of the pipeline's: never acted upon
                store = json.loads(data_path.read_text()) if data_path.exists() else {}
                if msg.topic == f"{args.prefix}access-orders":
                    access = fastavro.schemaless_reader(io.BytesIO(msg.value[5:]), access_schema)
                    value = access_answer(access, store, args.store, answer_schema, answer_id)
                    signature = signature_of(value)
                    producer.send(f"{args.prefix}erasure-acks", key=access["request_id"].encode(), value=value,
                                  headers=[("lifecycle.signature", signature)]).get(timeout=30)
                    continue
                order = fastavro.schemaless_reader(io.BytesIO(msg.value[5:]), order_schema)
                ids = set(order.get("subjects") or []) | {order["account_id"]}
                answer = {"request_id": order["request_id"], "account_id": order["account_id"] or None,
                          "store": args.store, "items_erased": 0, "completed_at": int(time.time() * 1000),
                          "error": None, "action": order.get("action", "erase"), "round": order.get("round", 0),
                          "items_found": 0, "nonce": order.get("nonce", "")}
                if answer["action"] == "verify" and not order["account_id"]:
                    answer.update(status="failed", error="cannot match keyed hashes")
                elif answer["action"] == "verify":
                    left = sum(len(store.get(i, [])) for i in ids)
                    answer.update(status="failed" if left else "nothing_found", items_found=left)
                else:
                    erased = sum(len(store.pop(i, [])) for i in ids)
                    tmp = data_path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(store))
                    os.replace(tmp, data_path)  # the delete is durable before the ack
                    answer.update(status="erased" if erased else "nothing_found", items_erased=erased)
                body = io.BytesIO()
                fastavro.schemaless_writer(body, ack_schema, answer)
                value = struct.pack(">bI", 0, ack_id) + body.getvalue()
                # Signed with the store's own key: the orchestrator believes no other ack; and the receipt
                # statement (the answer without the account id) signed too, for the certificate of erasure.
                receipt = json.dumps({"format": "lifecycle-store-receipt/1", **{
                    k: answer[k] for k in ("request_id", "store", "action", "round", "status", "items_erased",
                                           "items_found", "completed_at", "nonce")}},
                    sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
                producer.send(f"{args.prefix}erasure-acks", key=order["request_id"].encode(), value=value,
                              headers=[("lifecycle.signature", signature_of(value)),
                                       ("lifecycle.receipt-signature", signature_of(receipt))]).get(timeout=30)
        consumer.commit()
    consumer.close()
    producer.close()


if __name__ == "__main__":
    main()
