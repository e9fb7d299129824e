"""Where each input partition resumes, and the check that its log is still the one it was counted in.

The truth about how far each partition has been applied is its `intake_offsets` row, written in the
same transaction as the batch's effects (streams/ingest/loop.py), with the digest of the last record
applied. On assignment every partition is sought there (one record back when the digest is known).

A log that is new or shorter than the stored position (the embedded broker restarted: its log is
in memory; a topic recreated; a cluster restored from an older backup) is detected on the first
fetch after an assignment: the stored offset is past the partition's high-watermark (the fetch's,
which is right on every broker; Tansu's ListOffsets(latest) is not), or the first record fetched
is before it (a real Kafka resets an out-of-range position by itself). The partition then starts
again at the log's start, with event ids keeping the effect exactly-once; the reset is logged,
counted (`lifecycle_intake_log_resets_total`) and listed on `/readyz`; everything still in the
ingest journal is sent again, and the state topics are republished (streams/rebuild.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition

from lifecycle.streams.ingest.journal import journal_resend_all
from lifecycle.streams.runtime.database import Database
from lifecycle.streams.runtime.health import Health

__all__ = ["STORE_SQL", "StoredPositions", "record_digest"]

log = logging.getLogger("lifecycle.intake")

# Fault injection (tests only): seconds resume() waits between reading PostgreSQL's offsets and
# seeking to them, the window in which a fetch from Kafka's committed offset can arrive.
RESUME_DELAY_S = float(os.environ.get("LIFECYCLE_FAULT_RESUME_DELAY_S") or 0)

_LOAD = """
SELECT topic, partition, next_offset, last_digest FROM intake_offsets
WHERE consumer_group = %s AND topic = ANY(%s)
"""
# GREATEST: a worker that lost a partition mid-batch (a zombie) can never move it backwards; the
# digest follows the offset that wins.
STORE_SQL = """
INSERT INTO intake_offsets (consumer_group, topic, partition, next_offset, last_digest)
SELECT %s, * FROM unnest(%b::text[], %b::int[], %b::bigint[], %b::bytea[])
ON CONFLICT (consumer_group, topic, partition)
DO UPDATE SET next_offset = GREATEST(intake_offsets.next_offset, EXCLUDED.next_offset),
              last_digest = CASE WHEN EXCLUDED.next_offset >= intake_offsets.next_offset
                                 THEN EXCLUDED.last_digest ELSE intake_offsets.last_digest END,
              updated_at = now()
"""


def record_digest(value: bytes | None) -> bytes:
    """What identifies a record's content (16 bytes of SHA-256: collisions are not a concern)."""
    return hashlib.sha256(value or b"").digest()[:16]


class StoredPositions:
    """The intake's stored positions for one consumer group. ``to_kafka`` is the intake's copy of
    the offsets to commit to Kafka (for lag only), moved here when a partition is sought or reset."""

    def __init__(self, db: Database, group: str, topics: list[str], contract: dict[str, str], health: Health,
                 to_kafka: dict[TopicPartition, int]):
        self.db, self.group, self.topics, self.contract, self.health = db, group, topics, contract, health
        self.to_kafka = to_kafka
        # Stored positions not yet checked against the log: (next offset, digest of the record before it).
        self.unverified: dict[TopicPartition, tuple[int, bytes | None]] = {}
        # Bumped by each resume, with where it sought each partition: a batch fetched across a
        # resume drops what it holds of those partitions (drop_before_seek).
        self.generation = 0
        self.sought: dict[TopicPartition, int] = {}

    async def resume(self, consumer: AIOKafkaConsumer, assigned: list[TopicPartition]) -> None:
        """Seek every assigned partition to the offset PostgreSQL holds for it; a partition it has
        no row for starts from the group's Kafka commit, else the earliest record."""
        
        async def load(conn: psycopg.AsyncConnection[Any]) -> list[tuple[str, int, int, bytes | None]]:
            cur = await conn.execute(_LOAD, (self.group, self.topics))
            return [(str(t), int(p), int(o), bytes(d) if d is not None else None)
                    for t, p, o, d in await cur.fetchall()]

        stored = {(t, p): (o, d) for t, p, o, d in await self.db.run("intake offsets", load)}
        if RESUME_DELAY_S:
            await asyncio.sleep(RESUME_DELAY_S)
        self.generation += 1
        self.sought = {}
        for tp in assigned:
            position = stored.get((tp.topic, tp.partition))
            if position is not None:
                offset, digest = position
                # One record back when its digest is known: reading it again proves the log is the one
                # the offset was counted in (verify, below).
                self.sought[tp] = offset - 1 if digest is not None and offset > 0 else offset
                consumer.seek(tp, self.sought[tp])
                self.to_kafka[tp] = offset  # so that Kafka's copy (lag) catches up even when idle
                self.unverified[tp] = (offset, digest)

    def drop_before_seek(self, consumer: AIOKafkaConsumer,
                         batch: dict[TopicPartition, list[Any]]) -> set[TopicPartition]:
        """Partitions were sought while ``batch`` was fetched: what it holds of them may come from
        before the seek. Dropped, and read again from where the seek put them; returns them."""
        owned = consumer.assignment()
        dropped = set()
        for tp, position in self.sought.items():
            if batch.pop(tp, None) and tp in owned:
                consumer.seek(tp, position)
                dropped.add(tp)
        return dropped

    async def verify(self, consumer: AIOKafkaConsumer,
                     batch: dict[TopicPartition, list[Any]], later: set[TopicPartition]) -> None:
        """Compare each newly assigned partition's stored offset with its log, once fetched
        (``later``: partitions read again from their seek, checked with the next batch)."""
        owned = consumer.assignment()
        lost: list[tuple[TopicPartition, int, int]] = []
        for tp, (stored, digest) in list(self.unverified.items()):
            if tp not in owned:
                del self.unverified[tp]
                continue
            if tp in later:
                continue
            records = batch.get(tp)
            highwater = consumer.highwater(tp)
            back = stored - 1 if digest is not None and stored > 0 else stored  # where resume() sought
            if records:
                first = records[0].offset
                if first == back and back < stored:
                    if record_digest(records[0].value) == digest:
                        del records[0]  # the last record applied: the same log, carry on after it
                    else:
                        lost.append((tp, stored, -1))  # a different record there: another log
                elif first < back:  # the client already reset an out-of-range position
                    lost.append((tp, stored, first))
                del self.unverified[tp]
            elif highwater is not None:
                if highwater < stored:
                    lost.append((tp, stored, highwater))
                del self.unverified[tp]
        if lost:
            await self._reset(consumer, lost)
            for tp, _, _ in lost:
                batch.pop(tp, None)  # read again from the log's start

    async def _reset(self, consumer: AIOKafkaConsumer, lost: list[tuple[TopicPartition, int, int]]) -> None:
        starts = await consumer.beginning_offsets([tp for tp, _, _ in lost])
        for tp, stored, log_end in lost:
            found = "another record before it" if log_end < 0 else f"log end {log_end}"
            log.warning("the log of %s[%d] is not the one the intake stood in (stored offset %d, %s): "
                        "starting again at %d", tp.topic, tp.partition, stored, found, starts[tp])
            self.health.note_log_reset(self.contract[tp.topic], tp.partition, stored, log_end)

        async def tx(conn: psycopg.AsyncConnection[Any]) -> int:
            await conn.execute(
                "UPDATE intake_offsets o SET next_offset = r.start, last_digest = NULL, updated_at = now() "
                "FROM unnest(%b::text[], %b::int[], %b::bigint[]) AS r(topic, partition, start) "
                "WHERE o.consumer_group = %s AND o.topic = r.topic AND o.partition = r.partition",
                ([tp.topic for tp, _, _ in lost], [tp.partition for tp, _, _ in lost],
                 [starts[tp] for tp, _, _ in lost], self.group))
            return await journal_resend_all(conn)

        resent = await self.db.run("intake log reset", tx)
        for tp, _, _ in lost:
            consumer.seek(tp, starts[tp])
            self.to_kafka[tp] = starts[tp]
        log.warning("%d accepted events still in the ingest journal will be sent again", resent)
