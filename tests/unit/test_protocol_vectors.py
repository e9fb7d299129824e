"""The test vectors of docs/protocol.md (docs/protocol/vectors/) against the pipeline's own code, so
that a client in any language can test itself against them and trust what it gets: the same bytes
where the step is deterministic (framing, Ed25519 signatures), and a sealed value the pipeline
opens to the stated clear text where it draws randomness (sealed fields, sealed access parts)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifecycle.core.config import PROJECT_ROOT
from lifecycle.core.crypto import open_with, split
from lifecycle.core.orderkeys import OrderVerifier
from lifecycle.core.sealed_answers import open_box, part_aad, public_of
from lifecycle.core.storekeys import AckSigner, StoreKey, ack_signature_problem, receipt_problem, receipt_statement
from lifecycle.schemas import Codec
from lifecycle.schemas.catalog import load_catalog

VECTORS = PROJECT_ROOT / "docs" / "protocol" / "vectors"


def _vector(name: str) -> dict:
    return json.loads((VECTORS / f"{name}.json").read_text())


def test_every_vector_is_documented():
    page = (PROJECT_ROOT / "docs" / "protocol.md").read_text()
    names = sorted(p.stem for p in VECTORS.glob("*.json"))
    assert names == ["framed_record", "sealed_access_part", "sealed_field", "signed_ack", "signed_order"]
    assert [n for n in names if f"vectors/{n}.json" not in page] == []


def test_a_framed_record():
    v = _vector("framed_record")
    framed = Codec().encode(v["record"], v["value"])
    assert framed.hex() == v["framed_hex"]
    assert framed[0] == 0 and int.from_bytes(framed[1:5], "big") == v["schema_id"]
    assert v["schema_id"] == load_catalog().by_name(v["record"]).schema_id
    assert Codec().decode(bytes.fromhex(v["framed_hex"]), topic="erasure-acks").value == v["value"]


def test_a_signed_ack_and_its_receipt():
    v = _vector("signed_ack")
    signer = AckSigner(v["store_key_file"], "vector")
    value = bytes.fromhex(v["value_hex"])
    ack = Codec().decode(value, topic="erasure-acks").value
    assert base64.b64encode(signer.public or b"").decode() == v["store_public_key_base64"]
    assert {k: s.decode() for k, s in [*signer.headers(value), *signer.receipt_headers(ack)]} == v["headers"]
    assert receipt_statement(ack).decode() == v["receipt_statement"]
    keys = {ack["store"]: StoreKey(base64.b64decode(v["store_public_key_base64"]))}
    headers = [(k, s.encode()) for k, s in v["headers"].items()]
    assert ack_signature_problem(keys, ack["store"], value, headers) is None
    assert receipt_problem(keys, ack, headers) is None
    assert ack_signature_problem(keys, ack["store"], value[:-1] + b"\x00", headers) is not None


def test_a_signed_order():
    v = _vector("signed_order")
    value = bytes.fromhex(v["value_hex"])
    assert Codec().encode("DeletionOrder", v["value"]) == value
    headers = [(k, s.encode()) for k, s in v["headers"].items()]
    assert OrderVerifier(v["order_public_key_base64"], "vector").problem(value, headers) is None
    assert OrderVerifier(v["order_public_key_base64"], "vector").problem(value + b"x", headers) is not None
    other = base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes_raw()).decode()
    assert OrderVerifier(other, "vector").problem(value, headers) is not None


def test_a_sealed_field():
    v = _vector("sealed_field")
    kid, blob = split(v["sealed"])
    assert kid == v["kid"] and blob[:12].hex() == v["nonce_hex"]
    aead = AESGCM(bytes.fromhex(v["data_key_hex"]))
    assert open_with(aead, blob, v["subject"], v["field"]).decode() == v["clear"]
    assert bytes.fromhex(v["associated_data_hex"]) == b"lc1\x00" + v["subject"].encode() + b"\x00" + v["field"].encode()


def test_a_sealed_access_part():
    v = _vector("sealed_access_part")
    private = bytes.fromhex(v["answer_private_key_hex"])
    assert public_of(private).hex() == v["answer_key_hex"]
    aad = part_aad("5b0f3c1e-8a4e-4a8e-9a35-6a2f3c0d9e11", "crm", 0, 1)
    assert aad.hex() == v["associated_data_hex"]
    assert open_box(private, bytes.fromhex(v["sealed_hex"]), aad).decode() == v["clear"]


@pytest.mark.parametrize("name", ["framed_record", "signed_ack", "signed_order"])
def test_the_deterministic_vectors_are_what_the_generator_writes_today(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS.parent / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert json.loads(json.dumps(module.vectors()[name], sort_keys=True)) == _vector(name)
