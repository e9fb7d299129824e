"""What every stage that writes output shares: the context (settings, codec, clock, metrics,
hashing key, data keys, retention policy) and the outbox, where output records wait for their
transaction to commit. A record with personal fields is sealed as it is queued, under its Kafka
key's subject (docs/crypto-shredding.md)."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import Any

import psycopg

from lifecycle.core.clock import Clock
from lifecycle.core.config import Settings
from lifecycle.core.datakeys import DataKeys
from lifecycle.core.errors import ConfigError
from lifecycle.core.keys import Keyring
from lifecycle.core.orderkeys import OrderSigner
from lifecycle.core.policy import Policy
from lifecycle.schemas.catalog import RecordType
from lifecycle.schemas.codec import Codec
from lifecycle.schemas.personal import key_pairs, seal
from lifecycle.streams.runtime.metrics import Metrics

__all__ = ["PipelineContext", "enqueue", "ORDERED_TOPICS", "OutboxRow", "UnsealedRow", "OutboxItem"]

OutboxRow = tuple[str, bytes | None, bytes | None]  # (full topic, key, value; None: a tombstone)


@dataclasses.dataclass(frozen=True)
class UnsealedRow:
    """An output record with personal fields, encoded once its subject's keys are at hand."""

    topic: str  # full name
    key: str  # the subject
    record: RecordType
    value: dict[str, Any]


OutboxItem = OutboxRow | UnsealedRow

# Compacted topics, where the last record per key is the state: each key's records must reach the
# log in the order their transactions committed (docs/erasure.md, "Outbox order").
ORDERED_TOPICS = ("accounts", "consents", "erasure-status")
_KEY_LOCK_CLASS = 74_003
_KEY_LOCK_BUCKETS = 1024  # bounds the locks one transaction holds (PostgreSQL's lock table is shared)


@dataclasses.dataclass
class PipelineContext:
    settings: Settings
    codec: Codec
    clock: Clock
    metrics: Metrics
    keys: Keyring
    policy: Policy
    data_keys: DataKeys
    orders: OrderSigner | None = None  # signs orders and makes their nonces (lifecycle/core/orderkeys.py)
    ordered: frozenset[str] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.ordered = frozenset(self.settings.topic(t) for t in ORDERED_TOPICS)

    @property
    def signer(self) -> OrderSigner:
        if self.orders is None:
            raise ConfigError("orders need the pipeline's order key (lifecycle/core/orderkeys.py)")
        return self.orders

    def nonce(self, kind: str, request_id: str, action: str = "", round_: int = 0) -> str:
        """The nonce an order carries and its answer must echo."""
        return self.signer.nonce(kind, request_id, action, round_)

    def record(self, topic: str, key: str | None, record_name: str, value: dict[str, Any]) -> OutboxItem:
        """An outbox row (full topic, key bytes, framed value), or the UnsealedRow of one to seal."""
        record = self.codec.catalog.by_name(record_name)
        if record.personal and key is not None and self.settings.encrypt_personal_data:
            return UnsealedRow(self.settings.topic(topic), key, record, value)
        return (
            self.settings.topic(topic),
            key.encode() if key is not None else None,
            self.codec.encode(record, value),
        )

    async def enqueue(self, conn: psycopg.AsyncConnection[Any], rows: Sequence[OutboxItem]) -> None:
        """Queue output records. On a compacted topic, a transaction first takes a lock per key
        (hashed into buckets) and holds it to commit: a second writer of that key waits, so its
        outbox ids come after the first one's, and id order is commit order for every key."""
        framed = await self._seal(conn, rows)
        await self.lock_keys(conn, [(t, k) for t, k, _ in framed])
        await enqueue(conn, framed)

    async def _seal(self, conn: psycopg.AsyncConnection[Any], rows: Sequence[OutboxItem]) -> list[OutboxRow]:
        unsealed = [r for r in rows if isinstance(r, UnsealedRow)]
        if not unsealed:
            return list(rows)  # type: ignore[arg-type]  # no UnsealedRow among them
        prepared = await self.data_keys.prepare(conn, [p for d in unsealed for p in key_pairs(d.record, d.key)])
        keys = self.data_keys
        return [(r.topic, r.key.encode(), self.codec.encode(r.record, seal(keys.keys_of(prepared, r.key), r.record,
                                                                          r.value, r.key)))
                if isinstance(r, UnsealedRow) else r for r in rows]

    async def lock_keys(self, conn: psycopg.AsyncConnection[Any], keys: list[tuple[str, bytes | None]]) -> None:
        """Take the per-key locks of (full topic, key) pairs of compacted topics, to commit. A writer
        that reads state before queueing it (a rebuild) takes them before it reads."""
        locks = sorted({zlib.crc32(t.encode() + b"\0" + k) % _KEY_LOCK_BUCKETS
                        for t, k in keys if k is not None and t in self.ordered})
        if locks:  # sorted: two writers take their buckets in one order
            await conn.execute("SELECT pg_advisory_xact_lock(%s, b) FROM unnest(%b::int[]) AS b",
                               (_KEY_LOCK_CLASS, locks))


async def enqueue(conn: psycopg.AsyncConnection[Any], rows: Sequence[OutboxRow]) -> None:
    """Queue output records; the relay publishes them after this transaction commits. Records for
    a compacted topic go through ``PipelineContext.enqueue``."""
    if rows:
        topics, keys, values = zip(*rows, strict=True)
        # Arrays in binary (%b): psycopg's text array dumper was a fifth of the hot path's CPU.
        await conn.execute("INSERT INTO outbox (topic, key, value) SELECT topic, key, value FROM unnest(%b::text[], "
                           "%b::bytea[], %b::bytea[]) WITH ORDINALITY AS r(topic, key, value, n) ORDER BY n",
                           (list(topics), list(keys), list(values)))
