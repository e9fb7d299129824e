#!/usr/bin/env python3
"""An upstream service of another team producing events straight to Kafka, its personal fields
sealed before they leave it, with keys from the pipeline's key service.

It uses no code of this project, only what docs/protocol.md states: kafka-python, fastavro,
`cryptography`, the published schemas (schemas/avro/*.avsc) and HTTP.

1. find the event's schema: the .avsc whose "lifecycle.event_type" is the event's `event_type`;
   its "lifecycle.topic" is the topic (after the prefix);
2. the subject is the event's `account_id`, else its `visitor_id` (always the `visitor_id` on
   analytics-events); it is also the Kafka key;
3. for each field the schema marks "lifecycle.personal" (its value is the category), ask
   `POST /v1/keys` (bearer token of scope `keys`) for the subject's key of that category; a key
   that is null means the subject is erased: the event is not sent at all;
4. seal: `lc1:<kid>:<base64url, no padding, of nonce(12) || ciphertext || tag(16)>`, AES-256-GCM
   under the key, associated data `"lc1" NUL subject NUL field-name`;
5. frame (0x00, the schema id as 4 bytes big-endian, Avro binary) and produce with acks=all.

Events are JSON objects, one per line, flat as `POST /v1/events` takes them; `event_id` and
`occurred_at` (epoch ms) are filled in when missing. Prints one line per event: sent or skipped.

    python3 examples/producer.py --bootstrap 127.0.0.1:9092 --keys-url http://127.0.0.1:6066 \\
        --keys-token "$LIFECYCLE_KEYS_TOKEN" < events.jsonl
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import struct
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import fastavro
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastavro.schema import fingerprint, to_parsing_canonical_form
from kafka import KafkaProducer

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "avro"


def schema_id(schema: dict) -> int:
    """The built-in registry's id rule (docs/protocol.md, "Framing and schema ids")."""
    # CRC-64-AVRO of the Parsing Canonical Form as a number; fastavro gives its 8 bytes little-endian.
    v = int.from_bytes(bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")), "little")
    return ((v ^ (v >> 31) ^ (v >> 62)) & 0x7FFFFFFF) or 1


def load_event_schemas() -> dict[str, dict]:
    """event_type -> its schema, as published."""
    out = {}
    for path in sorted(SCHEMAS.glob("*.avsc")):
        raw = json.loads(path.read_text())
        if isinstance(raw, dict) and raw.get("lifecycle.event_type"):
            out[raw["lifecycle.event_type"]] = raw
    return out


def subject_of(schema: dict, event: dict) -> str:
    if schema["lifecycle.topic"] == "analytics-events":
        return event["visitor_id"]
    return event.get("account_id") or event["visitor_id"]


def ask_keys(url: str, token: str, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, bytes] | None]:
    """(subject, category) -> (kid, key), or None for an erased subject; one request for all."""
    body = json.dumps({"subjects": [{"subject": s, "category": c} for s, c in pairs]}).encode()
    request = urllib.request.Request(f"{url}/v1/keys", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        answer = json.loads(resp.read())
    return {(k["subject"], k["category"]): (k["kid"], base64.b64decode(k["key"])) if k["key"] is not None else None
            for k in answer["keys"]}


def seal(kid: str, key: bytes, subject: str, field: str, clear: str) -> str:
    nonce = os.urandom(12)
    blob = nonce + AESGCM(key).encrypt(nonce, clear.encode(), b"lc1\0" + subject.encode() + b"\0" + field.encode())
    return f"lc1:{kid}:{base64.urlsafe_b64encode(blob).rstrip(b'=').decode()}"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", default="lifecycle.")
    p.add_argument("--keys-url", required=True, help="the pipeline's HTTP address, e.g. http://127.0.0.1:6066")
    p.add_argument("--keys-token", default=os.environ.get("LIFECYCLE_KEYS_TOKEN", ""))
    p.add_argument("--file", default="-", help="JSON events, one per line (default: standard input)")
    args = p.parse_args()
    schemas = load_event_schemas()
    parsed = {name: fastavro.parse_schema(raw) for name, raw in schemas.items()}
    source = sys.stdin if args.file == "-" else open(args.file)
    with source:
        events = [json.loads(line) for line in source if line.strip()]
    now = int(time.time() * 1000)
    for event in events:
        event.setdefault("event_id", str(uuid.uuid4()))
        event.setdefault("occurred_at", now)
    personal = {name: {f["name"]: f["lifecycle.personal"] for f in raw["fields"] if "lifecycle.personal" in f}
                for name, raw in schemas.items()}
    pairs = sorted({(subject_of(schemas[e["event_type"]], e), category)
                    for e in events for field, category in personal[e["event_type"]].items()
                    if e.get(field) is not None})
    keys = ask_keys(args.keys_url, args.keys_token, pairs) if pairs else {}
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
    try:
        for event in events:
            schema = schemas[event["event_type"]]
            subject = subject_of(schema, event)
            fields = {f: c for f, c in personal[event["event_type"]].items() if event.get(f) is not None}
            if any(keys[(subject, c)] is None for c in fields.values()):
                print(f"skipped {event['event_id']}: its subject is erased", flush=True)
                continue
            for field, category in fields.items():
                kid, key = keys[(subject, category)]  # type: ignore[misc]
                event[field] = seal(kid, key, subject, field, event[field])
            record = {f["name"]: event.get(f["name"], f.get("default")) for f in schema["fields"]}
            body = io.BytesIO()
            fastavro.schemaless_writer(body, parsed[event["event_type"]], record)
            value = struct.pack(">bI", 0, schema_id(schema)) + body.getvalue()
            producer.send(args.prefix + schema["lifecycle.topic"], key=subject.encode(), value=value).get(timeout=30)
            print(f"sent {event['event_id']} {event['event_type']}", flush=True)
    finally:
        producer.close(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
