"""Sending a batch of rows to the broker as record batches, one per partition.

A record sent alone through a producer costs more than validating it (docs/performance.md, "The
front doors"): the worker's `POST /v1/events`, `lifecycle front` and the ingest journal's relay all
send through ``batched``. Rows are partitioned by key as every producer of ours partitions them
(murmur2, Kafka's default), so a subject's events stay in order whoever sent them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Row", "SendAll", "batched"]

Row = tuple[str, str, bytes, bytes]  # (event id, full topic, key, value) as journaled and sent
SendAll = Callable[[list[Row]], Awaitable[None]]  # returns once the broker acknowledged every row


def batched(producer_of: Callable[[], Any]) -> SendAll:
    """``send_all`` over the aiokafka producer ``producer_of()`` returns at the time of sending (a
    worker's producer is Faust's, started after the views are built)."""
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()

    async def send_all(rows: list[Row]) -> None:
        producer = producer_of()
        partitions: dict[str, list[int]] = {}
        records: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
        for _, topic, key, value in rows:
            if topic not in partitions:  # asked once per batch: a topic given more partitions is seen
                partitions[topic] = sorted(await producer.partitions_for(topic))
            chosen = partitioner(key, partitions[topic], partitions[topic])
            records.setdefault((topic, chosen), []).append((key, value))
        sent = []
        for (topic, partition), pairs in records.items():
            batch = producer.create_batch()
            for key, value in pairs:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                    sent.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            sent.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)

    return send_all
