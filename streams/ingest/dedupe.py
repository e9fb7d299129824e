"""Deduplication of input events, bounded: `processed_events` keeps an event's id only while the log
can still deliver that event again (docs/processors.md, "Deduplication window").

What can deliver an applied event again: its input topic, which keeps a record for its category's
window (deploy/topics.yaml: `raw_events` 30 days, `raw_analytics_events` 7 days) plus one segment
(the broker deletes whole segments; `segment.ms` is derived from the window, lifecycle/topics.py),
after a log reset or a restore from backup; a producer that resends; the ingest journal, whose
entries are forgotten in the transaction that applies them; and `dlq replay`, whose dead letters
share the input topics' window. The window is the longest of those, plus a day.

So ids are kept in one partition per UTC day of the event's own time (`occurred_at`): a copy of an
event has its time, so it lands in the partition of the original and the primary key (time, id,
day) refuses it there, one index probe as before. The key leads with the time because events
arrive roughly in time order: a batch's keys fall in few index pages, and an insert costs the
same in a full partition as in an empty one (with the random id first it did not: every event
touched a page of its own, written whole to the WAL after each checkpoint). Partitions are made ahead of use, in a short
transaction of their own (DDL inside a batch's transaction would hold the table's lock for the
whole batch), and a partition whose day has left the window is dropped whole by the intake's
tick: no DELETE scans the volume. An event older than the window when it arrives (a late
arrival: no topic holds such a record any more) goes to the `processed_events_late` partition
and is remembered there for one window of the pipeline's clock, then deleted: that partition holds
only late arrivals.

A copy of an event whose day has left the window is applied again. It cannot come from the log
(the topic no longer holds it); it would take a producer resending an event more than the
window after its time."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

import psycopg

from lifecycle.core.policy import Policy
from lifecycle.core.timeutil import DAY_MS, HOUR_MS, utc_day
from lifecycle.streams.runtime.context import PipelineContext
from lifecycle.streams.runtime.database import Database

__all__ = ["REDELIVERABLE", "DedupeWindow", "dedupe_tick", "dedupe_window_ms", "log_window_ms"]

log = logging.getLogger("lifecycle.dedupe")

# The categories of what can deliver an applied event again: the input topics and dead letters
# (deploy/topics.yaml; tests/unit/test_dedupe_window.py fails when that file says otherwise).
REDELIVERABLE = ("raw_events", "raw_analytics_events", "dead_letters")
_WEEK_MS = 7 * DAY_MS

_INSERT = "SELECT processed_events_insert(%b::uuid[], %b::date[], %b::timestamptz[], %s, %s)"


def log_window_ms(policy: Policy, categories: Iterable[str]) -> int:
    """How long the log can hold a record of topics kept as ``categories``: the longest window,
    plus the segment the broker keeps past it (lifecycle/topics.py), plus a day."""
    longest = max(policy.categories[name].window.approx_ms() for name in categories if name in policy.categories)
    return longest + min(max(longest // 10, HOUR_MS), _WEEK_MS) + DAY_MS


def dedupe_window_ms(policy: Policy) -> int:
    """How long the log can deliver an event again, from its time."""
    return log_window_ms(policy, REDELIVERABLE)


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


class DedupeWindow:
    """One per worker: the days it has made partitions for (made again at most once a day each)."""

    def __init__(self, window_ms: int):
        self.window_ms = window_ms
        self.made: set[dt.date] = set()

    def oldestutc_day(self, now_ms: int) -> dt.date:
        return utc_day(now_ms - self.window_ms)

    async def make_partitions(self, db: Database, times_ms: Iterable[int], now_ms: int) -> None:
        """The day partitions these event times need, made in a short transaction of their own."""
        oldest = self.oldestutc_day(now_ms)
        days = sorted({utc_day(t) for t in times_ms} - self.made)
        wanted = [d for d in days if d >= oldest]
        if not wanted:
            return

        async def make(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("SELECT processed_events_partition(d, %s) FROM unnest(%b::date[]) d", (oldest, wanted))

        await db.run("dedupe partitions", make)
        self.made.update(wanted)

    async def new_ids(self, conn: psycopg.AsyncConnection[Any], topic: str, ids: list[str], times_ms: list[int],
                      now_ms: int) -> set[str]:
        """The ids of ``ids`` not applied before, recorded as applied (in the caller's transaction)."""
        cur = await conn.execute(_INSERT, (ids, [utc_day(t) for t in times_ms], [_at(t) for t in times_ms], topic,
                                           _at(now_ms)))
        return {str(row[0]) for row in await cur.fetchall()}

    async def tick(self, conn: psycopg.AsyncConnection[Any], now_ms: int) -> int:
        """Drop the day partitions that left the window, and forget late arrivals older than it."""
        oldest = self.oldestutc_day(now_ms)
        cutoff = _at(now_ms - self.window_ms)
        cur = await conn.execute("SELECT processed_events_drop_before(%s, %s)", (oldest, cutoff))
        row = await cur.fetchone()
        dropped = int(row[0]) if row and row[0] is not None else 0
        # Late arrivals alone: a small partition, deleted by row.
        await conn.execute("DELETE FROM processed_events_late WHERE processed_at < %s", (cutoff,))
        self.made = {d for d in self.made if d >= oldest}
        if dropped:
            log.info("dedupe window: %d day partition(s) before %s dropped", dropped, oldest)
        return dropped


async def dedupe_tick(conn: psycopg.AsyncConnection[Any], ctx: PipelineContext, now_ms: int) -> int:
    """The intake's clock-driven work: the window moved on (``DedupeWindow.tick``)."""
    return await DedupeWindow(dedupe_window_ms(ctx.policy)).tick(conn, now_ms)
