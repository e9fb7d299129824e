"""Consumer lag of every consumer group of the pipeline, measured by the worker itself.

For each group (the workers' intake group `<prefix>worker` on the input topics, their Faust group
`<prefix>worker-acks` on `erasure-acks`, and each store's group on `tombstones`,
`retention-orders` and `access-orders`), per topic: the sum over partitions of the log-end offset minus the group's
committed offset (or the log start, where the group has committed nothing yet). Exported as
``lifecycle_consumer_lag{topic,group}`` and, so that a consumer that stopped moving can be told
from one that is merely behind, ``lifecycle_consumer_committed_offset{topic,group}``. Labels are
contract topic names and group roles (``worker``, ``store-postgres``), never identifiers.
"""

from __future__ import annotations

import logging
from typing import Any

from lifecycle.core.config import Settings
from lifecycle.streams.runtime.metrics import Metrics

__all__ = ["LagProbe", "pipeline_groups"]

log = logging.getLogger("lifecycle.lag")


def pipeline_groups(settings: Settings, input_topics: list[str]) -> dict[str, list[str]]:
    """Group role -> the contract topics it consumes."""
    groups = {"worker": [*input_topics, "erasure-acks"]}
    for store in settings.erasure_stores:
        groups[f"store-{store}"] = ["tombstones", "retention-orders", "access-orders"]
    return groups


def _group_id(settings: Settings, role: str, topic: str) -> str:
    if role != "worker":
        return f"{settings.topic_prefix}{role}"
    # The intake loop reads the input topics as `app_id`; the acks loop reads the acks as `app_id-acks`.
    return f"{settings.app_id}-acks" if topic == "erasure-acks" else settings.app_id


def _committed(admin: Any, group: str) -> dict[Any, Any]:
    """The group's committed offsets by partition (kafka-python 3 renamed the call)."""
    if hasattr(admin, "list_group_offsets"):
        return dict(admin.list_group_offsets(group).get(group) or {})
    return dict(admin.list_consumer_group_offsets(group))


class LagProbe:
    """Blocking (kafka-python); the worker runs ``measure`` in a thread on a timer."""

    def __init__(self, settings: Settings, groups: dict[str, list[str]], metrics: Metrics):
        self.settings, self.groups, self.metrics = settings, groups, metrics
        self._admin: Any = None
        self._consumer: Any = None
        for role, topics in groups.items():
            for topic in topics:
                metrics.consumer_lag.labels(topic, role)
                metrics.consumer_committed.labels(topic, role)

    def _clients(self) -> tuple[Any, Any]:
        if self._admin is None:
            from kafka import KafkaAdminClient, KafkaConsumer

            kw = self.settings.kafka_client_kwargs()
            self._admin = KafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap,
                                           client_id="lifecycle-lag", request_timeout_ms=10_000, **kw)
            self._consumer = KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap,
                                           client_id="lifecycle-lag", request_timeout_ms=11_000, **kw)
        return self._admin, self._consumer

    def measure(self) -> None:
        from kafka import TopicPartition

        try:
            admin, consumer = self._clients()
            wanted = {t: self.settings.topic(t) for topics in self.groups.values() for t in topics}
            partitions = []
            for full in set(wanted.values()):
                for p in consumer.partitions_for_topic(full) or ():
                    partitions.append(TopicPartition(full, p))
            ends = consumer.end_offsets(partitions)
            starts = consumer.beginning_offsets(partitions)
            commits: dict[str, dict[Any, Any]] = {}
            for role, topics in self.groups.items():
                for topic in topics:
                    group = _group_id(self.settings, role, topic)
                    if group not in commits:
                        commits[group] = _committed(admin, group)
                    committed = commits[group]
                    lag = done = 0
                    for tp in (tp for tp in partitions if tp.topic == wanted[topic]):
                        meta = committed.get(tp)
                        at = meta.offset if meta is not None and meta.offset >= 0 else starts.get(tp, 0)
                        lag += max(ends.get(tp, 0) - at, 0)
                        done += at
                    self.metrics.consumer_lag.labels(topic, role).set(lag)
                    self.metrics.consumer_committed.labels(topic, role).set(done)
        except Exception as exc:  # the broker is down or busy: the next round tries again
            log.warning("consumer lag not measured: %s", type(exc).__name__)
            self.close()

    def close(self) -> None:
        for client in (self._admin, self._consumer):
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing a broken client: nothing left to release
                    pass
        self._admin = self._consumer = None
