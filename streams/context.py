"""What every stage that writes output shares: the context (settings, codec, clock, metrics,
hashing key, retention policy) and the outbox, where output records wait for their transaction to commit."""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg

from lifecycle.config import Settings
from lifecycle.policy import Policy
from schemas.codec import Codec
from streams.clock import Clock
from streams.metrics import Metrics

__all__ = ["Context", "enqueue"]


@dataclasses.dataclass
class Context:
    settings: Settings
    codec: Codec
    clock: Clock
    metrics: Metrics
    hash_key: bytes
    policy: Policy

    def record(self, topic: str, key: str | None, record_name: str, value: dict[str, Any]) -> tuple[str, bytes | None, bytes]:
        """An outbox row: (full topic, key bytes, framed value)."""
        return (
            self.settings.topic(topic),
            key.encode() if key is not None else None,
            self.codec.encode(record_name, value),
        )


async def enqueue(conn: psycopg.AsyncConnection[Any], rows: list[tuple[str, bytes | None, bytes | None]]) -> None:
    """Queue output records; the relay publishes them after this transaction commits."""
    if rows:
        topics, keys, values = zip(*rows)
        # Arrays in binary (%b): psycopg's text array dumper was a fifth of the hot path's CPU.
        await conn.execute("INSERT INTO outbox (topic, key, value) SELECT topic, key, value FROM unnest(%b::text[], "
                           "%b::bytea[], %b::bytea[]) WITH ORDINALITY AS r(topic, key, value, n) ORDER BY n",
                           (list(topics), list(keys), list(values)))
