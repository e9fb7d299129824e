"""A connector's own /metrics: what its store did with the orders it received. Each connector
process serves its own registry on its own port (LIFECYCLE_METRICS_PORT), so several connectors
on one machine never share state. Labels: the store's name, ack status, data category."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from lifecycle.schemas.statuses import AckStatus

__all__ = ["ConnectorMetrics", "REJECT_REASONS"]

_STATUSES = tuple(AckStatus)
REJECT_REASONS = ("unsigned_order", "bad_signature", "invalid_order", "unreadable_order", "store_error")


@dataclasses.dataclass(frozen=True)
class ConnectorMetrics:
    registry: CollectorRegistry
    orders: Counter
    retention_items: Counter
    unavailable: Counter
    last_poll: Gauge
    rejected: Counter

    @classmethod
    def create(cls, store: str, categories: tuple[str, ...] = ()) -> ConnectorMetrics:
        registry = CollectorRegistry()
        m = cls(
            registry=registry,
            orders=Counter("lifecycle_connector_orders", "Deletion orders acknowledged, by store and status.",
                           ["store", "status"], registry=registry),
            retention_items=Counter("lifecycle_connector_retention_items_deleted",
                                    "Items this store erased in retention sweeps, by category.",
                                    ["store", "category"], registry=registry),
            unavailable=Counter("lifecycle_connector_store_unavailable",
                                "Attempts that found the store unreachable (each is retried).", ["store"],
                                registry=registry),
            last_poll=Gauge("lifecycle_connector_last_poll_timestamp_seconds",
                            "When the connector last polled its topics: flat when it is stuck.", ["store"],
                            registry=registry),
            rejected=Counter("lifecycle_connector_orders_rejected",
                             "Orders not acted upon (unsigned, forged, malformed), each dead-lettered, by reason.",
                             ["store", "reason"], registry=registry),
        )
        for reason in REJECT_REASONS:
            m.rejected.labels(store, reason)
        for status in _STATUSES:
            m.orders.labels(store, status)
        for category in categories:
            m.retention_items.labels(store, category)
        m.unavailable.labels(store)
        return m

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
