"""The worker's aiokafka consumers (the intake loop's and the acks loop's), configured in one place:
offsets are the loops' to commit, a new group starts from the earliest record, and the session
timeout and security come from the settings (lifecycle/core/config.py, ``aiokafka_kwargs``). The loop
they run is lifecycle/core/consume.py."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from lifecycle.core.config import Settings

__all__ = ["worker_consumer"]


def worker_consumer(settings: Settings, group_id: str, client_id: str, max_records: int,
                    fetch_wait_ms: int) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_records,
        fetch_max_wait_ms=fetch_wait_ms,
        session_timeout_ms=settings.broker_session_timeout_s * 1000,
        heartbeat_interval_ms=1000,
        **settings.aiokafka_kwargs(),
    )
