"""Every Prometheus metric of the pipeline, built in one place.

``Metrics.create(registry)`` so tests use a fresh ``CollectorRegistry``. Labels are bounded
enumerations (topic, event type, reason code), never identifiers or personal data. Known
label combinations are created up front so they start at 0 and rate() works from the start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lifecycle.schemas.catalog import Catalog
from lifecycle.schemas.errors import (
    DecodeError,
    InvalidEvent,
    NotConfluentFramed,
    SchemaMismatch,
    SchemaNotAllowed,
    TruncatedRecord,
    UnknownSchemaId,
)
from lifecycle.schemas.validate import PURPOSES

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
) + ("forged_ciphertext", "processing_failed")


@dataclasses.dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    events_ingested: Counter
    events_rejected: Counter
    dead_letters_written: Counter
    worker_ready: Gauge
    events_duplicate: Counter
    session_logs_written: Counter
    open_sessions: Gauge
    consents_expired: Counter
    gpc_signals: Counter
    analytics_excluded: Counter
    traffic_buckets: Counter
    outbox_published: Counter
    outbox_withheld: Counter
    registry_errors: Counter
    log_resets: Counter
    child_failing: Gauge
    clear_personal_fields: Counter
    http_refused: Counter
    events_suppressed: Counter
    erasures_opened: Counter
    erasures_completed: Counter
    erasures_pending: Gauge
    erasures_overdue: Gauge
    oldest_pending_erasure: Gauge
    erasure_duration: Histogram
    ack_latency: Histogram
    store_failures: Counter
    orders_reissued: Counter
    verifications: Counter
    regressions: Counter
    access_opened: Counter
    access_completed: Counter
    access_pending: Gauge
    access_overdue: Gauge
    access_parts_refused: Counter
    retention_orders: Counter
    retention_items_deleted: Counter
    retention_overdue: Gauge
    retention_last_sweep: Gauge
    retention_failures: Counter
    consumer_lag: Gauge
    consumer_committed: Gauge

    @classmethod
    def create(
        cls, registry: CollectorRegistry, catalog: Catalog, prefix: str = "lifecycle_", *,
        categories: Iterable[str] = (), stores: Iterable[str] = (),
        swept_by: Callable[[str], Iterable[str]] = lambda store: (),
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
            events_duplicate=Counter(
                f"{prefix}events_duplicate",
                "Input events already applied (a redelivery or a resent event id), skipped.",
                ["topic"],
                registry=registry,
            ),
            session_logs_written=Counter(
                f"{prefix}session_logs_written", "Finished sessions written to session logs.", registry=registry
            ),
            open_sessions=Gauge(f"{prefix}open_sessions", "Sessions started and not yet ended.", registry=registry),
            consents_expired=Counter(
                f"{prefix}consents_expired",
                "Cookie consents that lapsed 13 months after they were given, by purpose.",
                ["purpose"],
                registry=registry,
            ),
            gpc_signals=Counter(
                f"{prefix}gpc_signals",
                "Global Privacy Control signals: seen (once per signal), then per subject it covers applied "
                "(advertising opted out) or unchanged (already out, or granted after the signal).",
                ["outcome"],
                registry=registry,
            ),
            analytics_excluded=Counter(
                f"{prefix}analytics_events_excluded",
                "Page views left out of traffic trends: no_consent, restricted, late.",
                ["reason"],
                registry=registry,
            ),
            traffic_buckets=Counter(
                f"{prefix}traffic_buckets_closed",
                "Hourly traffic buckets closed: published (at least k visitors) or suppressed.",
                ["outcome"],
                registry=registry,
            ),
            outbox_published=Counter(
                f"{prefix}outbox_published",
                "Output records published from the outbox, by contract topic.",
                ["topic"],
                registry=registry,
            ),
            outbox_withheld=Counter(
                f"{prefix}outbox_withheld",
                "Output records the relay did not publish, by contract topic and reason: `erased` (a "
                "record about a person whose erasure committed first), `too_large` (dead-lettered).",
                ["topic", "reason"],
                registry=registry,
            ),
            registry_errors=Counter(
                f"{prefix}schema_registry_errors",
                "Schema Registry calls that failed (the batch is retried with backoff), by stage.",
                ["stage"],
                registry=registry,
            ),
            child_failing=Gauge(
                f"{prefix}stack_child_failing",
                "1 while a process `up` supervises (worker, connector NAME) keeps crashing; the rest keeps "
                "serving (lifecycle/supervisor.py).", ["child"], registry=registry),
            log_resets=Counter(
                f"{prefix}intake_log_resets",
                "Input partitions whose log was new or shorter than the stored position (broker restarted "
                "or restored); the intake started them again at the log's start.",
                ["topic"],
                registry=registry,
            ),
            clear_personal_fields=Counter(
                f"{prefix}clear_personal_fields",
                "Personal fields that arrived in clear on an input topic (a producer that does not seal; "
                "docs/crypto-shredding.md): accepted, sealed on every output.",
                ["topic"],
                registry=registry,
            ),
            http_refused=Counter(
                f"{prefix}http_refused",
                "HTTP requests refused before any view ran: unauthorized (no valid token), forbidden (the "
                "token lacks the route's scope), busy (too many in flight), too_slow (body past its deadline).",
                ["reason"],
                registry=registry,
            ),
            events_suppressed=Counter(
                f"{prefix}events_suppressed",
                "Events the identity rule silences after an erasure (docs/erasure.md), dropped before any processor.",
                ["topic", "event_type"],
                registry=registry,
            ),
            erasures_opened=Counter(f"{prefix}erasure_requests_opened", "Erasure requests opened.",
                                    registry=registry),
            erasures_completed=Counter(f"{prefix}erasure_requests_completed",
                                       "Erasure requests completed (every store acknowledged success).",
                                       registry=registry),
            erasures_pending=Gauge(f"{prefix}erasure_requests_pending", "Erasure requests open now.",
                                   registry=registry),
            erasures_overdue=Gauge(f"{prefix}erasure_requests_overdue",
                                   "Open erasure requests past their deadline (policy clock).", registry=registry),
            oldest_pending_erasure=Gauge(f"{prefix}erasure_oldest_pending_opened_timestamp_seconds",
                                         "When the oldest open erasure was opened (0 when none is open).",
                                         registry=registry),
            # Buckets from a minute to past the 30-day SLO; 2592000 s (30 days) is a boundary.
            erasure_duration=Histogram(
                f"{prefix}erasure_duration_seconds", "Time from opening to completion of an erasure (policy clock).",
                buckets=(60, 600, 3600, 6 * 3600, 86400, 7 * 86400, 14 * 86400, 2592000, 60 * 86400),
                registry=registry),
            ack_latency=Histogram(
                f"{prefix}erasure_ack_latency_seconds", "Time from the last issue of an order to a store's ack.",
                ["store"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600), registry=registry),
            store_failures=Counter(f"{prefix}erasure_store_failures", "Acknowledgements with status failed.",
                                   ["store"], registry=registry),
            orders_reissued=Counter(f"{prefix}erasure_orders_reissued",
                                    "Deletion orders issued again to a store that failed or stayed silent.",
                                    registry=registry),
            verifications=Counter(f"{prefix}erasure_verifications",
                                  "Verify answers from stores, by result: `clean` (nothing left), `found` "
                                  "(the store still holds data of an erasure it acknowledged), `unchecked` "
                                  "(the store could not look) or `replayed` (found by a replay on a store "
                                  "restored from a backup, and erased again).",
                                  ["store", "result"], registry=registry),
            regressions=Counter(f"{prefix}erasure_proofs_regressed",
                                "Completed erasures a later verification contradicted (the proof is regressed "
                                "and the erasure re-opened).", registry=registry),
            access_opened=Counter(f"{prefix}access_requests_opened",
                                  "Access requests opened (GDPR Art. 15 and 20; docs/access.md).", registry=registry),
            access_completed=Counter(f"{prefix}access_requests_completed",
                                     "Access requests answered by every store, their archive assembled.",
                                     registry=registry),
            access_pending=Gauge(f"{prefix}access_requests_pending", "Access requests open now.", registry=registry),
            access_overdue=Gauge(f"{prefix}access_requests_overdue",
                                 "Open access requests past their one-month deadline (policy clock).",
                                 registry=registry),
            access_parts_refused=Counter(f"{prefix}access_parts_refused",
                                         "Stores' access answers whose sealed parts did not open (the store is "
                                         "asked again).", registry=registry),
            retention_orders=Counter(f"{prefix}retention_orders_issued",
                                     "Retention orders issued, by data category (deploy/retention.yaml).",
                                     ["category"], registry=registry),
            retention_items_deleted=Counter(f"{prefix}retention_items_deleted",
                                            "Items erased by retention sweeps, by data category and store.",
                                            ["category", "store"], registry=registry),
            retention_overdue=Gauge(f"{prefix}retention_oldest_overdue_seconds",
                                    "How long past its window the oldest item a store still holds is "
                                    "(0 when nothing is overdue), by category and store.",
                                    ["category", "store"], registry=registry),
            retention_last_sweep=Gauge(f"{prefix}retention_last_sweep_timestamp_seconds",
                                       "When a store last acknowledged a retention sweep (wall clock).",
                                       ["store"], registry=registry),
            retention_failures=Counter(f"{prefix}retention_sweep_failures",
                                       "Retention sweeps a store reported as failed.", ["store"],
                                       registry=registry),
            consumer_lag=Gauge(f"{prefix}consumer_lag",
                               "Records not yet consumed, by topic and consumer group role (sum over partitions).",
                               ["topic", "group"], registry=registry),
            consumer_committed=Gauge(f"{prefix}consumer_committed_offset",
                                     "The group's committed offsets, summed over partitions: flat while a "
                                     "consumer is stalled.", ["topic", "group"], registry=registry),
        )
        for store in stores:
            m.retention_failures.labels(store)
            for result in ("clean", "found", "unchecked", "replayed"):
                m.verifications.labels(store, result)
            for category in set(categories) & set(swept_by(store)):
                m.retention_items_deleted.labels(category, store)
        for category in categories:
            m.retention_orders.labels(category)
        for purpose in PURPOSES:
            m.consents_expired.labels(purpose)
        for outcome in ("seen", "applied", "unchanged"):
            m.gpc_signals.labels(outcome)
        for reason in ("no_consent", "restricted", "late"):
            m.analytics_excluded.labels(reason)
        for outcome in ("published", "suppressed"):
            m.traffic_buckets.labels(outcome)
        for topic in ("accounts", "consents", "session-logs", "traffic-aggregates"):
            m.outbox_published.labels(topic)
            m.outbox_withheld.labels(topic, "erased")
            m.outbox_withheld.labels(topic, "too_large")
        for stage in ("intake", "erasure-acks"):
            m.registry_errors.labels(stage)
        for reason in ("unauthorized", "forbidden", "busy", "too_slow", "unsupported_encoding"):
            m.http_refused.labels(reason)
        for record in catalog.records:
            if record.event_type:
                m.events_ingested.labels(record.topic, record.event_type)
                m.events_suppressed.labels(record.topic, record.event_type)
        for topic in catalog.input_topics:
            m.log_resets.labels(topic)
            m.clear_personal_fields.labels(topic)
            m.events_duplicate.labels(topic)
            m.dead_letters_written.labels(topic)
            for reason in REJECT_REASONS:
                m.events_rejected.labels(topic, reason)
        return m
