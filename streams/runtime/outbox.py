"""The outbox relay: publishes output records queued by committed transactions.

A record is deleted from the outbox only after the broker acknowledged it, so a crash between
the two publishes it again (at-least-once; every output record is keyed and carries its own
identity, so consumers can apply it idempotently).

Order: one relay at a time publishes (a transaction-scoped advisory lock; any worker may hold it),
in outbox id order, and each round waits for the broker before the next. Writers of one key on a
compacted topic are serialised by ``PipelineContext.enqueue``, so id order is their commit order: every
key's records reach the log in commit order, whatever the number of workers.

Orders (``ORDER_TOPICS``) are signed with the pipeline's order key as they are published: a store
acts on nothing else (docs/security.md).

Two guards, so that no path is blocked and no erased person comes back:
- a non-null record about a subject whose erasure has committed (its null tombstone is queued or
  published) is withheld and counted; whichever writer raced the erasure, the tombstone stays last;
- a record too large for the producer is replaced by a dead letter (stage ``outbox``, reason
  ``record_too_large``, without the oversized value) instead of failing the round for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg

from lifecycle.core.clock import Clock
from lifecycle.core.config import Settings
from lifecycle.core.keys import Keyring
from lifecycle.core.orderkeys import OrderSigner
from lifecycle.streams.runtime.database import Database
from lifecycle.streams.runtime.metrics import Metrics
from lifecycle.streams.runtime.suppression import erased_among

__all__ = ["Relay", "MAX_RECORD_BYTES", "SUBJECT_TOPICS", "ORDER_TOPICS"]

log = logging.getLogger("lifecycle.outbox")

# The producer's max.request.size is 1,000,000 bytes; leave room for the batch's own framing.
MAX_RECORD_BYTES = 990_000
# Topics keyed by a person (account or visitor id): what the erasure guard applies to.
SUBJECT_TOPICS = ("accounts", "consents", "session-logs")
# Topics whose records command a store: each is signed as it is published (lifecycle/core/orderkeys.py).
ORDER_TOPICS = ("tombstones", "access-orders", "retention-orders")
_RELAY_LOCK = (74_002, 1)
_CLAIM = "SELECT id, topic, key, value FROM outbox ORDER BY id LIMIT %s FOR UPDATE"

# (topic, key, size) -> (dead-letters topic, key, value, headers) for a record too large to send.
OversizeLetter = Callable[[str, bytes | None, int], tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]


class Relay:
    """One per worker; ``once`` publishes a round."""

    def __init__(self, settings: Settings, db: Database, keys: Keyring, clock: Clock, metrics: Metrics,
                 oversize_letter: OversizeLetter, signer: OrderSigner):
        self.db = db
        self.signer = signer
        self.signed_topics = frozenset(settings.topic(t) for t in ORDER_TOPICS)
        self.keys = keys
        self.clock = clock
        self.metrics = metrics
        self.batch = settings.outbox_batch
        self.prefix = settings.topic_prefix
        self.subject_topics = frozenset(settings.topic(t) for t in SUBJECT_TOPICS)
        self.oversize_letter = oversize_letter

    async def once(self, producer: Any) -> int:
        """Publish up to one batch of queued records, in queue order; returns how many rows left
        the outbox (0 when it was empty or another relay holds the turn)."""
        return await self.db.run("outbox relay", lambda conn: self._round(conn, producer))

    async def _round(self, conn: psycopg.AsyncConnection[Any], producer: Any) -> int:
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", _RELAY_LOCK)
        row = await cur.fetchone()
        if not row or not row[0]:
            return 0
        cur = await conn.execute(_CLAIM, (self.batch,))
        rows = await cur.fetchall()
        if not rows:
            return 0
        withheld = await self._erased_rows(conn, rows)
        topic_of = {r[0]: r[1] for r in rows}
        lettered: set[int] = set()
        futures = []
        for row_id, topic, key, value in rows:
            if row_id in withheld:
                continue
            key_b = bytes(key) if key is not None else None
            value_b = bytes(value) if value is not None else None
            size = len(key_b or b"") + len(value_b or b"")
            if size > MAX_RECORD_BYTES:
                letter_topic, key_b, letter, headers = self.oversize_letter(topic, key_b, size)
                lettered.add(row_id)
                self._count_withheld(topic, "too_large")
                log.warning("outbox record of %d bytes for %s dead-lettered: over the producer's limit", size, topic)
                futures.append(await producer.send(letter_topic, key=key_b, value=letter, partition=None,
                                                   timestamp=None, headers=headers))
                continue
            signed = self.signer.headers(value_b) if topic in self.signed_topics and value_b is not None else None
            futures.append(await producer.send(topic, key=key_b, value=value_b, partition=None, timestamp=None,
                                               headers=signed))
        for fut in futures:
            await fut
        await conn.execute("DELETE FROM outbox WHERE id = ANY(%b)", ([r[0] for r in rows],))
        for row_id, topic, _, _ in rows:
            if row_id not in withheld and row_id not in lettered:
                self.metrics.outbox_published.labels(self._contract(topic)).inc()
        for row_id in withheld:
            self._count_withheld(topic_of[row_id], "erased")
        return len(rows)

    async def _erased_rows(self, conn: psycopg.AsyncConnection[Any], rows: list[Any]) -> set[int]:
        """Ids of non-null rows about a subject on the suppression list (read after the claim, so
        any erasure that committed before these rows were visible is seen)."""
        about = {r[0]: bytes(r[2]).decode(errors="replace") for r in rows
                 if r[1] in self.subject_topics and r[2] is not None and r[3] is not None}
        if not about:
            return set()
        erased = await erased_among(conn, self.keys, about.values(), self.clock.now_ms())
        return {row_id for row_id, subject in about.items() if subject in erased}

    def _count_withheld(self, topic: str, reason: str) -> None:
        self.metrics.outbox_withheld.labels(self._contract(topic), reason).inc()

    def _contract(self, topic: str) -> str:
        return topic[len(self.prefix):] if topic.startswith(self.prefix) else topic
