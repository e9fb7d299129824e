"""The emitter SDK for Python upstream services.

Validates every event exactly as the HTTP endpoint and the intake stage do, encodes it in the
Confluent wire format and produces it keyed by its subject, with ``acks=all``, batching, and
the idempotent producer where the broker supports it.
"""

from __future__ import annotations

from typing import Any

from lifecycle_core.config import Settings
from schemas.catalog import Catalog, load_catalog
from schemas.codec import Codec
from schemas.registry import make_registry
from schemas.validate import from_json, subject_key

__all__ = ["Emitter"]


class Emitter:
    """``with Emitter(settings) as em: em.emit(event)``; ``flush()`` waits for the broker."""

    def __init__(self, settings: Settings, *, catalog: Catalog | None = None, idempotent: bool | None = None):
        from kafka import KafkaProducer

        self.settings = settings
        self.catalog = catalog or load_catalog()
        self.codec = Codec(
            make_registry(settings.schema_registry_url, self.catalog), self.catalog, topic_prefix=settings.topic_prefix
        )
        if idempotent is None:
            idempotent = settings.kafka_idempotence if settings.kafka_idempotence is not None else False
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            linger_ms=5,
            batch_size=256 * 1024,
            enable_idempotence=idempotent,
            retries=5,
            client_id="lifecycle-emitter",
            **settings.kafka_client_kwargs(),
        )
        self._futures: list[Any] = []

    def emit(self, event: dict[str, Any]) -> str:
        """Validate and send one flat JSON-style event; returns its event_id.
        Raises ValidationFailed naming every bad field; nothing is sent then."""
        record, value = from_json(event, self.catalog)
        self.send_raw(
            self.settings.topic(record.topic), subject_key(record, value).encode(), self.codec.encode(record, value)
        )
        return str(value["event_id"])

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        """Produce bytes as they are (tools and tests use it to inject any record)."""
        self._futures.append(self._producer.send(topic, key=key, value=value, headers=headers or []))

    def flush(self, timeout_s: float = 30) -> int:
        """Wait until the broker acknowledged everything sent; returns how many."""
        self._producer.flush(timeout=timeout_s)
        done = 0
        for fut in self._futures:
            fut.get(timeout=timeout_s)  # raises if the broker refused a record
            done += 1
        self._futures.clear()
        return done

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close(timeout=10)

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
