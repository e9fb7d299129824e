"""The worker's aiokafka consumers (the intake loop's and the acks loop's), configured in one place:
offsets are the loops' to commit, a new group starts from the earliest record, and the session
timeout and security come from the settings (lifecycle/core/config.py, ``aiokafka_kwargs``); and
the one rebalance listener both loops use."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from lifecycle.core.config import Settings

__all__ = ["BatchListener", "worker_consumer"]


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


class BatchListener(ConsumerRebalanceListener):
    """A revocation waits for the batch in hand (applied and committed first, so the next owner
    starts after it). An assignment calls ``on_assigned``, under the same lock when ``exclusive``:
    a loop that seeks on assignment must not seek while a batch fetched before is being applied."""

    def __init__(self, busy: asyncio.Lock, on_assigned: Callable[[list[Any]], Awaitable[None]], exclusive: bool):
        self.busy, self.on_assigned, self.exclusive = busy, on_assigned, exclusive

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.busy:
            pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self.exclusive:
            async with self.busy:
                await self.on_assigned(list(assigned))
        else:
            await self.on_assigned(list(assigned))
