"""Small helpers for tests that drive a running worker."""

from __future__ import annotations

import atexit
import json
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from lifecycle.supervisor import http_get

T0 = 1_768_435_200_000  # 2026-01-15T00:00:00Z
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def wait_for(predicate: Callable[[], Any], deadline_s: float = 30, what: str = "condition") -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")


def event(event_type: str, at: int, *, account: str | None = None, visitor: str | None = None,
          source: str = "test", **fields: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "event_type": event_type, "occurred_at": at,
            "account_id": account, "visitor_id": visitor, "source": source, **fields}


def metric(url: str, name: str, **labels: str) -> float:
    status, body = http_get(url)
    assert status == 200
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def post(url: str, body: Any, token: str | None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, text


def records(settings: Any, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) on ``topic`` (the contract's name) in log order, read to the end of each
    partition."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1500)
    try:
        parts = [TopicPartition(settings.topic(topic), p)
                 for p in sorted(consumer.partitions_for_topic(settings.topic(topic)) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        return [(msg.key, msg.value) for msg in consumer]
    finally:
        consumer.close()


def last_by_key(settings: Any, topic: str) -> dict[bytes | None, bytes | None]:
    """The last value of every key on ``topic``: what compaction keeps."""
    return dict(records(settings, topic))


def emit(settings: Any, *events: dict[str, Any]) -> None:
    """Send events with the emitter SDK and wait until the broker has them all."""
    from lifecycle.connectors.emitter import Emitter

    with Emitter(settings) as emitter:
        emitter.emit_many(list(events))


def erasure_answer(worker: Any, account: str) -> dict[str, Any] | None:
    """GET /v1/accounts/{account}/erasure as JSON, or None when there is none."""
    status, body = http_get(worker.url(f"/v1/accounts/{account}/erasure"), token=worker.settings.read_token)
    return json.loads(body) if status == 200 else None


def opened_letter(settings: Any, msg: Any, letter: dict[str, Any]) -> tuple[bytes | None, bytes | None] | None:
    """A dead letter's original (key, bytes), opened with the pipeline's data keys as `dlq replay`
    opens them; None once its subject is erased."""
    import psycopg

    from lifecycle.core.datakeys import open_data_keys
    from lifecycle.streams.runtime.sealing import open_letter

    sealed_for = next((v.decode() for k, v in msg.headers or [] if k == "lifecycle.dlq.sealed_for"), None)
    found = _LETTER_KEYS.get(settings.postgres_dsn)
    if found is None or found[1].closed:  # one connection per database: a test may open thousands
        found = _LETTER_KEYS[settings.postgres_dsn] = (open_data_keys(settings, create=False),
                                                       psycopg.connect(settings.postgres_dsn, autocommit=True))
    return open_letter(found[1], found[0], letter["original_key"], letter["original_value"], sealed_for)


_LETTER_KEYS: dict[str, Any] = {}


@atexit.register
def _close_letter_connections() -> None:
    for _, conn in _LETTER_KEYS.values():
        conn.close()


def ack_headers(signer: Any, value: bytes) -> list[tuple[str, bytes]]:
    """The headers a store sends with an ErasureAck: its signature, and its signed receipt."""
    from lifecycle.schemas import Codec

    return [*signer.headers(value), *signer.receipt_headers(Codec().decode(value, topic="erasure-acks").value)]


def lifecycle_cli(settings: Any, *args: str) -> Any:
    """`lifecycle ARGS` with these settings, as a user runs it; the completed process."""
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "lifecycle", *args], env={**os.environ, **settings.to_env()},
                          capture_output=True, timeout=120)
