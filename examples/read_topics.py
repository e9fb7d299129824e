#!/usr/bin/env python3
"""Read the pipeline's topics as a client outside it would, and open the personal fields.

Uses nothing of the pipeline's code: kafka-python, fastavro and `cryptography`, the published
schemas (schemas/avro/*.avsc), the schema id rule of docs/schemas.md, and the key service
(docs/crypto-shredding.md):

1. decode each record with the schema its id names;
2. every field the schema marks ``"lifecycle.personal"`` whose value starts with ``lc1:`` is
   sealed: ``lc1:<kid>:<base64url(nonce || ciphertext || tag)>``;
3. ask ``POST /v1/keys/lookup`` (bearer token of the key service) for the kids; a key that is
   null was destroyed by an erasure, so the value reads ``[erased]``;
4. open with AES-256-GCM, associated data ``lc1 \\0 <subject> \\0 <field>``, where the subject is
   the record's Kafka key (for a dead letter, its header ``lifecycle.dlq.sealed_for``: ``key``,
   or the subject it names).

Prints one JSON object per record. Example:

    python3 examples/read_topics.py --bootstrap 127.0.0.1:9092 --keys-url http://127.0.0.1:6066 \\
        --keys-token "$LIFECYCLE_KEYS_TOKEN" --topic account-events --topic accounts
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import urllib.request
from pathlib import Path

import fastavro
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastavro.schema import fingerprint, to_parsing_canonical_form
from kafka import KafkaConsumer, TopicPartition

ERASED = "[erased]"
TOPICS = ["account-events", "session-events", "consent-events", "analytics-events", "accounts", "consents",
          "session-logs", "traffic-aggregates", "tombstones", "erasure-acks", "erasure-status", "retention-orders",
          "access-orders", "dead-letters"]


def schema_id(schema: dict) -> int:
    # The Avro specification's CRC-64-AVRO of the Parsing Canonical Form, as a number (Java's
    # parsingFingerprint64); fastavro gives its 8 bytes little-endian.
    value = int.from_bytes(bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")), "little")
    return ((value ^ (value >> 31) ^ (value >> 62)) & 0x7FFFFFFF) or 1


def load_schemas(folder: Path) -> dict[int, dict]:
    out = {}
    for path in sorted(folder.glob("*.avsc")):
        schema = json.loads(path.read_text())
        out[schema_id(schema)] = schema
    return out


def lookup(url: str, token: str, kids: list[str]) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for start in range(0, len(kids), 1000):
        body = json.dumps({"kids": kids[start:start + 1000]}).encode()
        request = urllib.request.Request(url.rstrip("/") + "/v1/keys/lookup", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            for kid, key in json.loads(answer.read())["keys"].items():
                found[kid] = base64.b64decode(key) if key else None
    return found


def open_sealed(token: str, subject: str, field: str, keys: dict[str, bytes | None]) -> str | bytes:
    _, kid, data = token.split(":", 2)
    key = keys.get(kid)
    if key is None:
        return ERASED
    blob = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    aad = b"lc1\x00" + subject.encode() + b"\x00" + field.encode()
    try:
        return AESGCM(key).decrypt(blob[:12], blob[12:], aad)
    except InvalidTag:
        return "[does not open as this subject's field]"


def read(bootstrap: str, topics: list[str], idle_ms: int) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=idle_ms)
    try:
        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        return list(consumer)
    finally:
        consumer.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--prefix", default="lifecycle.")
    ap.add_argument("--topic", action="append", help="a contract topic (default: every one)")
    ap.add_argument("--schemas", type=Path, default=Path(__file__).resolve().parent.parent / "schemas" / "avro")
    ap.add_argument("--keys-url", required=True)
    ap.add_argument("--keys-token", required=True)
    ap.add_argument("--idle-ms", type=int, default=2000)
    args = ap.parse_args()
    schemas = load_schemas(args.schemas)
    records = read(args.bootstrap, [args.prefix + t for t in (args.topic or TOPICS)], args.idle_ms)

    decoded = []
    kids: set[str] = set()
    for msg in records:
        if msg.value is None:
            decoded.append((msg, None, "tombstone"))
            continue
        schema = schemas.get(int.from_bytes(msg.value[1:5], "big")) if msg.value[:1] == b"\0" else None
        if schema is None:
            decoded.append((msg, None, "not a record of these schemas"))
            continue
        value = fastavro.schemaless_reader(io.BytesIO(msg.value[5:]), fastavro.parse_schema(schema))
        decoded.append((msg, schema, value))
        for field in schema["fields"]:
            token = value.get(field["name"])
            if isinstance(token, bytes) and token.startswith(b"lc1:"):
                token = token.decode()
            if isinstance(token, str) and token.startswith("lc1:"):
                kids.add(token.split(":", 2)[1])
    keys = lookup(args.keys_url, args.keys_token, sorted(kids)) if kids else {}

    for msg, schema, value in decoded:
        headers = {k: v.decode(errors="replace") for k, v in msg.headers or []}
        out = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
               "key": msg.key.decode(errors="replace") if msg.key is not None else None, "headers": headers}
        if schema is None:
            out["undecoded"] = value
        else:
            sealed_for = headers.get("lifecycle.dlq.sealed_for")
            subject = out["key"] if sealed_for in (None, "key") else sealed_for
            opened = {}
            for field in schema["fields"]:
                name, token = field["name"], value.get(field["name"])
                marked = field.get("lifecycle.personal") or (sealed_for and name in ("original_value", "original_key"))
                if isinstance(token, bytes) and token.startswith(b"lc1:"):
                    token = token.decode()
                if marked and isinstance(token, str) and token.startswith("lc1:") and subject is not None:
                    token = open_sealed(token, subject, name, keys)
                if isinstance(token, bytes):
                    token = token.decode(errors="replace")
                opened[name] = token
            out["record"] = schema["name"]
            out["value"] = opened
        print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
