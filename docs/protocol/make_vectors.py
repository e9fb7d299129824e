#!/usr/bin/env python3
"""Write the test vectors of docs/protocol.md into docs/protocol/vectors/, from fixed inputs.

    .venv/bin/python docs/protocol/make_vectors.py

Signatures (Ed25519) and framing are deterministic and computed here with the pipeline's own code;
sealing draws random nonces and keys, so those vectors fix them and build the bytes by the format
docs/protocol.md states. tests/unit/test_protocol_vectors.py checks every vector against the
pipeline's code: the same bytes, or a sealed value the pipeline opens to the stated clear text.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lifecycle.core.orderkeys import OrderSigner
from lifecycle.core.storekeys import AckSigner, receipt_statement
from lifecycle.schemas import Codec
from lifecycle.schemas.catalog import load_catalog

OUT = Path(__file__).resolve().parent / "vectors"
STORE_KEY = "ed25519:" + "11" * 32  # a store's key file, as `lifecycle store add` writes it
ORDER_SEED = bytes.fromhex("22" * 32)  # the pipeline's order key (raw private bytes)
REQUEST = "5b0f3c1e-8a4e-4a8e-9a35-6a2f3c0d9e11"
ACK = {"request_id": REQUEST, "account_id": "acc-vector", "store": "crm", "status": "erased",
       "items_erased": 3, "completed_at": 1768435200000, "error": None, "action": "erase", "round": 0,
       "items_found": 0, "nonce": "0123456789abcdef0123456789abcdef"}
ORDER = {"request_id": REQUEST, "account_id": "acc-vector", "reason": "account_closed", "issued_at": 1768435200000,
         "deadline": 1771027200000, "categories": ["account_profile"], "legal_hold": False,
         "subjects": ["acc-vector", "vis-vector"], "pseudonymise": [], "action": "erase", "round": 0,
         "subject_hashes": [], "nonce": "0123456789abcdef0123456789abcdef"}


def _hex(data: bytes) -> str:
    return data.hex()


def vectors() -> dict[str, dict]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    codec = Codec()
    ack_value = codec.encode("ErasureAck", ACK)
    signer = AckSigner(STORE_KEY, "vector")
    order_value = codec.encode("DeletionOrder", ORDER)
    order_signer = OrderSigner(Ed25519PrivateKey.from_private_bytes(ORDER_SEED))
    out: dict[str, dict] = {}
    out["framed_record"] = {
        "what": "an ErasureAck in the Confluent wire format: 0x00, the schema id (4 bytes, big-endian), Avro binary",
        "record": "ErasureAck", "value": ACK, "schema_id": load_catalog().by_name("ErasureAck").schema_id,
        "framed_hex": _hex(ack_value)}
    out["signed_ack"] = {
        "what": "a store's signature of an ack and of its receipt statement (Ed25519, deterministic)",
        "store_key_file": STORE_KEY, "store_public_key_base64": base64.b64encode(signer.public or b"").decode(),
        "value_hex": _hex(ack_value),
        "headers": {k: v.decode() for k, v in [*signer.headers(ack_value), *signer.receipt_headers(ACK)]},
        "receipt_statement": receipt_statement(ACK).decode()}
    out["signed_order"] = {
        "what": "the pipeline's signature of a DeletionOrder: header lifecycle.order-signature, base64",
        "order_public_key_base64": order_signer.public, "value": ORDER, "value_hex": _hex(order_value),
        "headers": {k: v.decode() for k, v in order_signer.headers(order_value)}}
    # A sealed field: AES-256-GCM under the subject's data key, associated data "lc1" NUL subject NUL field.
    data_key, nonce, kid = bytes.fromhex("33" * 32), bytes.fromhex("44" * 12), "AAAAAAAAAAAAAAAAAAAAAA"
    aad = b"lc1\x00acc-vector\x00email"
    blob = nonce + AESGCM(data_key).encrypt(nonce, b"marie.curie@example.org", aad)
    out["sealed_field"] = {
        "what": "a personal field sealed under its subject's data key: lc1:<kid>:<base64url(nonce||ciphertext||tag)>",
        "data_key_hex": _hex(data_key), "kid": kid, "subject": "acc-vector", "field": "email",
        "nonce_hex": _hex(nonce), "associated_data_hex": _hex(aad), "clear": "marie.curie@example.org",
        "sealed": f"lc1:{kid}:{base64.urlsafe_b64encode(blob).rstrip(b'=').decode()}"}
    # A sealed access part: X25519 to the order's answer key, HKDF-SHA256 (32 bytes; salt: the
    # ephemeral public key then the answer key; info "lifecycle-access-answer/1"), AES-256-GCM.
    raw = serialization.Encoding.Raw
    answer_private = bytes.fromhex("55" * 32)
    answer_public = X25519PrivateKey.from_private_bytes(answer_private).public_key().public_bytes(
        raw, serialization.PublicFormat.Raw)
    ephemeral = X25519PrivateKey.from_private_bytes(bytes.fromhex("66" * 32))
    ephemeral_public = ephemeral.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(answer_public))
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral_public + answer_public,
               info=b"lifecycle-access-answer/1").derive(shared)
    part_nonce = bytes.fromhex("77" * 12)
    document = json.dumps({"data": {"records": [{"note": "called"}]}, "holds": ["account_profile"], "items": 1,
                           "store": "crm"}, sort_keys=True).encode()
    part_aad = f"{REQUEST}\0crm\0{0}\0{1}".encode()
    out["sealed_access_part"] = {
        "what": "one part of an access answer: ephemeral public key (32) || nonce (12) || ciphertext || tag (16)",
        "answer_private_key_hex": _hex(answer_private), "answer_key_hex": _hex(answer_public),
        "ephemeral_private_key_hex": "66" * 32, "nonce_hex": _hex(part_nonce),
        "associated_data_hex": _hex(part_aad), "clear": document.decode(),
        "sealed_hex": _hex(ephemeral_public + part_nonce + AESGCM(key).encrypt(part_nonce, document, part_aad))}
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, vector in vectors().items():
        (OUT / f"{name}.json").write_text(json.dumps(vector, indent=2, sort_keys=True) + "\n")
        print(f"wrote {OUT / name}.json")


if __name__ == "__main__":
    main()
