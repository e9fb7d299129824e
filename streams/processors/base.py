"""What every processor shares: the context, the protocol, the outbox."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import psycopg

from lifecycle.config import Settings
from schemas.codec import Codec
from streams.clock import Clock
from streams.metrics import Metrics

__all__ = ["Context", "Processor", "enqueue"]


@dataclasses.dataclass
class Context:
    settings: Settings
    codec: Codec
    clock: Clock
    metrics: Metrics
    hash_key: bytes

    def record(self, topic: str, key: str | None, record_name: str, value: dict[str, Any]) -> tuple[str, bytes | None, bytes]:
        """An outbox row: (full topic, key bytes, framed value)."""
        return (
            self.settings.topic(topic),
            key.encode() if key is not None else None,
            self.codec.encode(record_name, value),
        )


class Processor(Protocol):
    topic: str  # the contract input topic it consumes

    async def apply(self, conn: psycopg.AsyncConnection[Any], events: list[dict[str, Any]], ctx: Context) -> None:
        """Apply new events (in partition order) inside the caller's transaction."""

    async def tick(self, conn: psycopg.AsyncConnection[Any], now_ms: int, ctx: Context) -> None:
        """Clock-driven work (expiry, timeouts, closing windows) inside a transaction."""


async def enqueue(conn: psycopg.AsyncConnection[Any], rows: list[tuple[str, bytes | None, bytes | None]]) -> None:
    """Queue output records; the relay publishes them after this transaction commits."""
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany("INSERT INTO outbox (topic, key, value) VALUES (%s, %s, %s)", rows)
