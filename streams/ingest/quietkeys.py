"""Data keys of quiet subjects, deleted: `data_keys` holds a live key only while something sealed
under it may still be read (docs/crypto-shredding.md, "How long a key lives").

A key seals a subject's values of one category, on their way to a topic; PostgreSQL's tables hold
clear values under their own retention. So once nobody has sealed with a key for longer than the log
keeps a record (the longest window of the delete topics that carry sealed values, plus the segment
the broker keeps past it, plus a day: the deduplication window's reckoning, streams/ingest/dedupe.py),
no copy sealed under it is left in any topic, and the key is deleted, row and all. A subject who
comes back later gets a new key. A visitor seen once no longer costs a row for ever.

The deletion is in two steps: a quiet key is marked retiring, and deleted a grace period of wall
time later unless a process fetched it meanwhile (a fetch of a key last used on an earlier day marks
it used, and clears the mark). Processes seal from their cache for at most
`LIFECYCLE_DATA_KEY_CACHE_S` of wall time without asking the database, so after the grace no cache
holds a key cached before the mark; on the event clock of tests and the demo, months can pass in
those seconds, which is why the grace is wall time and not the pipeline's clock.

Kept whatever their use: the keys of categories that a compacted topic carries (`accounts` keeps each
account's latest profile sealed until the account closes), and destroyed keys (wrapped NULL): an
erased subject's row is what stops a key of theirs from being made again.
"""

from __future__ import annotations

import logging
from typing import Any

from lifecycle.core.policy import Policy
from lifecycle.core.timeutil import utc_day
from lifecycle.streams.ingest.dedupe import log_window_ms
from lifecycle.streams.runtime.context import PipelineContext

__all__ = ["SEALED_IN_LOG", "KEPT_WHILE_SUBJECT_EXISTS", "quiet_key_window_ms", "quiet_categories", "quiet_keys_tick",
           "retiring_grace_s"]

log = logging.getLogger("lifecycle.datakeys")

# The retention categories of the delete topics that carry sealed values: the input topics, the
# published `session-logs`, and the dead letters, which keep an input record's bytes (deploy/topics.yaml;
# tests/unit/test_quiet_keys.py fails when that file or the data map says otherwise).
SEALED_IN_LOG = ("raw_events", "raw_analytics_events", "output_streams", "dead_letters")
# The personal categories a compacted topic carries: their keys go only with their subject's erasure.
KEPT_WHILE_SUBJECT_EXISTS = ("account_profile",)
_BATCH = 10_000  # keys deleted per tick: a short transaction; the next tick takes the next batch


def quiet_key_window_ms(policy: Policy) -> int:
    """How long after its last use a key may still open something in the log."""
    return log_window_ms(policy, SEALED_IN_LOG)


def quiet_categories(policy: Policy) -> list[str]:
    """The categories whose keys are deleted when quiet: every category of the policy but those a
    compacted topic keeps (keys of other names, an access request's answer key, are never)."""
    return sorted(c for c in policy.categories if c not in KEPT_WHILE_SUBJECT_EXISTS)


def retiring_grace_s(cache_s: float) -> float:
    """How long a key stays marked retiring before it goes: twice the cache time, and a minute."""
    return 2 * cache_s + 60


async def quiet_keys_tick(conn: Any, ctx: PipelineContext, now_ms: int) -> int:
    """Delete a batch of the keys last used before the window; how many."""
    unused_before = utc_day(now_ms - quiet_key_window_ms(ctx.policy))
    deleted = await ctx.data_keys.delete_quiet(conn, quiet_categories(ctx.policy), unused_before,
                                               retiring_grace_s(ctx.data_keys.cache_s), _BATCH)
    if deleted:
        log.info("data keys: %d unused since before %s deleted", deleted, unused_before)
    return deleted
