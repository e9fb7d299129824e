"""Web analytics: "we collect data from Geolocation, but only in a global manner and unrelated to
an individual ... We track aggregated traffic trends across our site but we do not correlate this
information with personally identifiable data about individual users" (policy, WEB ANALYTICS).

Only page views of subjects with a current analytics consent (at the event's time), whose account
(if any) is not restricted, count. Identifiers are dropped here: a bucket (hour, browser, OS,
referrer domain, MIME type, country) keeps counts and, until it closes, keyed hashes of its
visitors to count them once. When the clock passes the bucket's end plus a grace period, the
bucket closes: with at least k distinct visitors it is published to `traffic_aggregates` and the
`traffic-aggregates` topic; under k it is only counted as suppressed. The hashes are deleted
either way.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from typing import Any

import psycopg

from streams.processors.base import Context, enqueue
from streams.timeutil import HOUR_MS, dt_to_ms, hour_start_ms, ms_to_dt

__all__ = ["TrafficProcessor", "DIMENSIONS"]

DIMENSIONS = ("browser", "os", "referrer_domain", "mime_type", "country")
_CONSENTS = """
SELECT subject_id, given_at, expires_at FROM consent_current
WHERE purpose = 'analytics' AND granted AND subject_id = ANY(%s)
"""
_EXCLUDED_ACCOUNTS = """
SELECT account_id FROM accounts
WHERE account_id = ANY(%s) AND (processing_restricted OR status IN ('closure_requested', 'closed'))
"""
_COUNT = """
INSERT INTO traffic_open (bucket_start, browser, os, referrer_domain, mime_type, country, page_views)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (bucket_start, browser, os, referrer_domain, mime_type, country)
DO UPDATE SET page_views = traffic_open.page_views + EXCLUDED.page_views
"""
_VISITOR = """
INSERT INTO traffic_visitor_hashes (bucket_start, browser, os, referrer_domain, mime_type, country, visitor_hash)
VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""
_CLOSE = """
WITH closed AS (
    DELETE FROM traffic_open WHERE bucket_start <= %(cutoff)s RETURNING *
), hashes AS (
    DELETE FROM traffic_visitor_hashes WHERE bucket_start <= %(cutoff)s
    RETURNING bucket_start, browser, os, referrer_domain, mime_type, country
), visitors AS (
    SELECT bucket_start, browser, os, referrer_domain, mime_type, country, count(*) AS n
    FROM hashes GROUP BY 1, 2, 3, 4, 5, 6
)
SELECT c.bucket_start, c.browser, c.os, c.referrer_domain, c.mime_type, c.country, c.page_views,
       COALESCE(v.n, 0)
FROM closed c LEFT JOIN visitors v USING (bucket_start, browser, os, referrer_domain, mime_type, country)
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


def _valid_at(grants: list[tuple[Any, Any]], at_ms: int) -> bool:
    return any(dt_to_ms(given) <= at_ms and (expires is None or at_ms < dt_to_ms(expires)) for given, expires in grants)


class TrafficProcessor:
    topic = "analytics-events"

    async def apply(self, conn: psycopg.AsyncConnection[Any], events: list[dict[str, Any]], ctx: Context) -> None:
        subjects = sorted({s for e in events for s in (e.get("visitor_id"), e.get("account_id")) if s})
        accounts = sorted({e["account_id"] for e in events if e.get("account_id")})
        grants: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
        cur = await conn.execute(_CONSENTS, (subjects,))
        for subject, given, expires in await cur.fetchall():
            grants[subject].append((given, expires))
        excluded: set[str] = set()
        if accounts:
            cur = await conn.execute(_EXCLUDED_ACCOUNTS, (accounts,))
            excluded = {row[0] for row in await cur.fetchall()}
        late_cutoff = ctx.clock.now_ms() - HOUR_MS - ctx.settings.traffic_grace_s * 1000
        views: dict[tuple[Any, ...], int] = defaultdict(int)
        visitors: set[tuple[Any, ...]] = set()
        reasons: dict[str, int] = defaultdict(int)
        for e in events:
            at = e["occurred_at"]
            if e.get("account_id") in excluded:
                reasons["restricted"] += 1
                continue
            if not any(_valid_at(grants.get(s, []), at) for s in (e.get("visitor_id"), e.get("account_id")) if s):
                reasons["no_consent"] += 1
                continue
            bucket = hour_start_ms(at)
            if bucket < late_cutoff:
                reasons["late"] += 1
                continue
            # From here on, no identifier: the bucket's dimensions and a keyed hash only.
            key = (ms_to_dt(bucket), *[(e.get(d) or "unknown")[:128] for d in DIMENSIONS])
            views[key] += 1
            digest = hmac.new(ctx.hash_key, f"{bucket}|{e['visitor_id']}".encode(), hashlib.sha256).digest()[:16]
            visitors.add((*key, digest))
        for reason, n in reasons.items():
            ctx.metrics.analytics_excluded.labels(reason).inc(n)
        if views:
            async with conn.cursor() as c:
                await c.executemany(_COUNT, [(*k, n) for k, n in views.items()])
                await c.executemany(_VISITOR, sorted(visitors))

    async def tick(self, conn: psycopg.AsyncConnection[Any], now_ms: int, ctx: Context) -> None:
        cutoff = now_ms - HOUR_MS - ctx.settings.traffic_grace_s * 1000
        cur = await conn.execute(_CLOSE, {"cutoff": ms_to_dt(cutoff)})
        closed = await cur.fetchall()
        if not closed:
            return
        published, suppressed = [], defaultdict(int)
        rows = []
        for bucket, browser, os_, ref, mime, country, page_views, n in closed:
            if n >= ctx.settings.traffic_k:
                published.append((bucket, browser, os_, ref, mime, country, page_views, n))
                rows.append(ctx.record(
                    "traffic-aggregates", f"{dt_to_ms(bucket)}|{browser}|{os_}|{ref}|{mime}|{country}",
                    "TrafficAggregate", {
                        "bucket_start": dt_to_ms(bucket), "browser": browser, "os": os_, "referrer_domain": ref,
                        "mime_type": mime, "country": country, "page_views": page_views, "visitors": n,
                    }))
            else:
                suppressed[bucket] += 1
        async with conn.cursor() as c:
            if published:
                await c.executemany(_PUBLISH, published)
            if suppressed:
                await c.executemany(_SUPPRESS, list(suppressed.items()))
        await enqueue(conn, rows)
        ctx.metrics.traffic_buckets.labels("published").inc(len(published))
        ctx.metrics.traffic_buckets.labels("suppressed").inc(sum(suppressed.values()))
