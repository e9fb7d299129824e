"""Every Prometheus metric of the pipeline, built in one place.

``Metrics.create(registry)`` so tests use a fresh ``CollectorRegistry``. Labels are bounded
enumerations (topic, event type, reason code), never identifiers or personal data. Known
label combinations are created up front so they start at 0 and rate() works from the start.
"""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, Counter, Gauge

from schemas.catalog import Catalog
from schemas.errors import (
    DecodeError,
    InvalidEvent,
    NotConfluentFramed,
    SchemaMismatch,
    SchemaNotAllowed,
    TruncatedRecord,
    UnknownSchemaId,
)

__all__ = ["Metrics", "REJECT_REASONS"]

REJECT_REASONS = tuple(
    cls.reason
    for cls in (
        DecodeError,
        NotConfluentFramed,
        UnknownSchemaId,
        TruncatedRecord,
        SchemaMismatch,
        SchemaNotAllowed,
        InvalidEvent,
    )
)


@dataclasses.dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    events_ingested: Counter
    events_rejected: Counter
    dead_letters_written: Counter
    worker_ready: Gauge

    @classmethod
    def create(
        cls, registry: CollectorRegistry, catalog: Catalog, prefix: str = "lifecycle_"
    ) -> Metrics:
        m = cls(
            registry=registry,
            events_ingested=Counter(
                f"{prefix}events_ingested",
                "Input events accepted by the intake stage, by topic and event type.",
                ["topic", "event_type"],
                registry=registry,
            ),
            events_rejected=Counter(
                f"{prefix}events_rejected",
                "Records refused (sent to dead-letters or answered 4xx), by topic and reason code.",
                ["topic", "reason"],
                registry=registry,
            ),
            dead_letters_written=Counter(
                f"{prefix}dead_letters_written",
                "Records written to the dead-letters topic, by the topic they came from.",
                ["topic"],
                registry=registry,
            ),
            worker_ready=Gauge(
                f"{prefix}worker_ready",
                "1 once this worker has joined its consumer group, else 0.",
                registry=registry,
            ),
        )
        for record in catalog.records:
            if record.event_type:
                m.events_ingested.labels(record.topic, record.event_type)
        for topic in catalog.input_topics:
            m.dead_letters_written.labels(topic)
            for reason in REJECT_REASONS:
                m.events_rejected.labels(topic, reason)
        return m
