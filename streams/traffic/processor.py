"""Web analytics: "we collect data from Geolocation, but only in a global manner and unrelated to
an individual ... We track aggregated traffic trends across our site but we do not correlate this
information with personally identifiable data about individual users" (policy, WEB ANALYTICS).

A page view waits in `traffic_pending` until its hourly bucket closes: the clock past the hour
plus a grace period (LIFECYCLE_TRAFFIC_GRACE_S). Waiting matters because consent and
restriction arrive on other topics, consumed concurrently: judging a page view on arrival would
depend on which topic happened to be read first. At close, in one statement, a page view counts
only if its visitor or account held an analytics consent at the view's own time and the account
(if any) is neither restricted nor closing; the bucket (hour, browser, OS, referrer domain, MIME
type, country) keeps counts only, and its pending rows, the only place identifiers were, are
deleted. A bucket with at least k distinct visitors is published to `traffic_aggregates` and the
`traffic-aggregates` topic; under k it is only counted as suppressed. Views arriving after their
bucket closed are counted as late and dropped.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import psycopg

from lifecycle.core.timeutil import HOUR_MS, dt_to_ms, hour_start_ms, ms_to_dt
from lifecycle.streams.runtime.processor import PipelineContext

__all__ = ["TrafficProcessor", "DIMENSIONS"]

DIMENSIONS = ("browser", "os", "referrer_domain", "mime_type", "country")
_PENDING = """
INSERT INTO traffic_pending (event_id, bucket_start, browser, os, referrer_domain, mime_type, country,
                             visitor_id, account_id, occurred_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING
"""
_CLOSE = """
WITH due AS (
    DELETE FROM traffic_pending WHERE bucket_start <= %(cutoff)s RETURNING *
), judged AS (
    SELECT d.*,
           EXISTS (SELECT 1 FROM accounts a WHERE a.account_id = d.account_id
                   AND (a.processing_restricted OR a.status IN ('closure_requested', 'closed'))) AS restricted,
           EXISTS (SELECT 1 FROM consent_current c
                   WHERE c.purpose = 'analytics' AND c.granted AND c.subject_id IN (d.visitor_id, d.account_id)
                     AND c.given_at <= d.occurred_at
                     AND (c.expires_at IS NULL OR d.occurred_at < c.expires_at)) AS consented
    FROM due d
)
SELECT bucket_start, browser, os, referrer_domain, mime_type, country,
       count(*) FILTER (WHERE consented AND NOT restricted),
       count(DISTINCT visitor_id) FILTER (WHERE consented AND NOT restricted),
       count(*) FILTER (WHERE restricted),
       count(*) FILTER (WHERE NOT restricted AND NOT consented)
FROM judged GROUP BY 1, 2, 3, 4, 5, 6
"""
_PUBLISH = """
INSERT INTO traffic_aggregates (bucket_start, browser, os, referrer_domain, mime_type, country, page_views, visitors)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (bucket_start, browser, os, referrer_domain, mime_type, country) DO NOTHING
"""
_SUPPRESS = """
INSERT INTO traffic_suppressed (bucket_start, buckets) VALUES (%s, %s)
ON CONFLICT (bucket_start) DO UPDATE SET buckets = traffic_suppressed.buckets + EXCLUDED.buckets
"""


def _cutoff(now_ms: int, ctx: PipelineContext) -> int:
    """Buckets starting at or before this instant are closed."""
    return now_ms - HOUR_MS - ctx.settings.traffic_grace_s * 1000


class TrafficProcessor:
    topic = "analytics-events"

    async def apply(self, conn: psycopg.AsyncConnection[Any], events: list[dict[str, Any]],
                    ctx: PipelineContext) -> None:
        cutoff = _cutoff(ctx.clock.now_ms(), ctx)
        rows, late = [], 0
        for e in events:
            bucket = hour_start_ms(e["occurred_at"])
            if bucket <= cutoff:
                late += 1
                continue
            rows.append((e["event_id"], ms_to_dt(bucket), *[(e.get(d) or "unknown")[:128] for d in DIMENSIONS],
                         e["visitor_id"], e.get("account_id"), ms_to_dt(e["occurred_at"])))
        if late:
            ctx.metrics.analytics_excluded.labels("late").inc(late)
        if rows:
            async with conn.cursor() as cur:
                await cur.executemany(_PENDING, rows)

    async def tick(self, conn: psycopg.AsyncConnection[Any], now_ms: int, ctx: PipelineContext) -> None:
        cur = await conn.execute(_CLOSE, {"cutoff": ms_to_dt(_cutoff(now_ms, ctx))})
        closed = await cur.fetchall()
        if not closed:
            return
        published: list[Any] = []
        suppressed: defaultdict[Any, int] = defaultdict(int)
        excluded = {"restricted": 0, "no_consent": 0}
        rows = []
        for bucket, browser, os_, ref, mime, country, views, visitors, restricted, no_consent in closed:
            excluded["restricted"] += restricted
            excluded["no_consent"] += no_consent
            if visitors >= ctx.settings.traffic_k:
                published.append((bucket, browser, os_, ref, mime, country, views, visitors))
                rows.append(ctx.record(
                    "traffic-aggregates", f"{dt_to_ms(bucket)}|{browser}|{os_}|{ref}|{mime}|{country}",
                    "TrafficAggregate", {
                        "bucket_start": dt_to_ms(bucket), "browser": browser, "os": os_, "referrer_domain": ref,
                        "mime_type": mime, "country": country, "page_views": views, "visitors": visitors,
                    }))
            elif visitors > 0:
                suppressed[bucket] += 1
        async with conn.cursor() as c:
            if published:
                await c.executemany(_PUBLISH, published)
            if suppressed:
                await c.executemany(_SUPPRESS, list(suppressed.items()))
        await ctx.enqueue(conn, rows)
        for reason, n in excluded.items():
            if n:
                ctx.metrics.analytics_excluded.labels(reason).inc(n)
        ctx.metrics.traffic_buckets.labels("published").inc(len(published))
        ctx.metrics.traffic_buckets.labels("suppressed").inc(sum(suppressed.values()))
