"""Session records: "we may also collect data on login information, including the date and size of
all files sent over the Internet during a session" (policy, SESSION RECORDS).

One open-session row per session; every file transfer kept with its date and size (keyed by its
event id, so a replay never counts it twice); a session is closed by `session.ended` or, once it
has been idle longer than the timeout (measured on event time, against the clock), by the tick.
The finished session goes to `session_logs` (idempotent on session id; one partition per month,
created on first use) and to `session-logs`.
Failed logins are kept as security information.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from lifecycle.core.timeutil import dt_to_ms, ms_to_dt
from lifecycle.streams.runtime.processor import PipelineContext
from lifecycle.streams.runtime.suppression import erased_among

__all__ = ["SessionsProcessor", "FILES_ON_TOPIC"]

# A session log on the topic lists at most this many files (about 35 bytes each in Avro), so that
# a session of any size stays far below a Kafka record's 1 MB limit; `file_count` and
# `total_bytes` are always exact, and PostgreSQL's session_logs keeps every file (docs/processors.md).
FILES_ON_TOPIC = 5000

_START = """
INSERT INTO open_sessions (session_id, account_id, started_at, last_event_at, ip, domain, user_agent,
                           browser, os, login_method, second_factor)
SELECT %(session_id)s, %(account_id)s, %(at)s, %(at)s, %(ip)s, %(domain)s, %(user_agent)s, %(browser)s,
       %(os)s, %(login_method)s, %(second_factor)s
WHERE NOT EXISTS (SELECT 1 FROM session_logs WHERE session_id = %(session_id)s)
ON CONFLICT (session_id) DO NOTHING
"""
# File transfers are most of the traffic: one statement for all of a batch's files, one for the
# sessions they touch (a statement per event was the hot path's cost; docs/performance.md).
_FILES = """
INSERT INTO session_files (event_id, session_id, account_id, transferred_at, size_bytes, mime_type)
SELECT * FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::timestamptz[], %b::bigint[], %b::text[])
ON CONFLICT (event_id) DO NOTHING
"""
_TOUCH = """
UPDATE open_sessions o SET last_event_at = GREATEST(o.last_event_at, t.at)
FROM (SELECT session_id, max(at) AS at FROM unnest(%b::text[], %b::timestamptz[]) AS u(session_id, at)
      GROUP BY session_id) t
WHERE o.session_id = t.session_id
"""
_FAILED = """
INSERT INTO failed_logins (event_id, account_id, occurred_at, ip, domain, user_agent, failure_reason)
VALUES (%(event_id)s, %(account_id)s, %(at)s, %(ip)s, %(domain)s, %(user_agent)s, %(failure_reason)s)
ON CONFLICT (event_id) DO NOTHING
"""
# Move sessions from open_sessions to session_logs with their files, in one statement.
_CLOSE = """
WITH closing AS (
    DELETE FROM open_sessions o USING (SELECT unnest(%(ids)b::text[]) AS session_id,
                                              unnest(%(ended)b::timestamptz[]) AS ended_at,
                                              unnest(%(reasons)b::text[]) AS reason) c
    WHERE o.session_id = c.session_id
    RETURNING o.*, c.ended_at, c.reason
), files AS (
    SELECT f.session_id, count(*) AS n, sum(f.size_bytes) AS total,
           jsonb_agg(jsonb_build_object('transferred_at', (extract(epoch FROM f.transferred_at) * 1000)::bigint,
                                        'size_bytes', f.size_bytes, 'mime_type', f.mime_type)
                     ORDER BY f.transferred_at, f.event_id) AS files
    FROM session_files f JOIN closing c ON c.session_id = f.session_id
    GROUP BY f.session_id
), logged AS (
    INSERT INTO session_logs (session_id, account_id, started_at, ended_at, end_reason, login_method,
                              second_factor, ip, domain, user_agent, browser, os, file_count, total_bytes, files)
    SELECT c.session_id, c.account_id, c.started_at, c.ended_at, c.reason, c.login_method, c.second_factor,
           c.ip, c.domain, c.user_agent, c.browser, c.os, COALESCE(f.n, 0), COALESCE(f.total, 0),
           COALESCE(f.files, '[]'::jsonb)
    FROM closing c LEFT JOIN files f ON f.session_id = c.session_id
    ON CONFLICT (session_id, ended_at) DO NOTHING
    RETURNING *
)
SELECT session_id, account_id, started_at, ended_at, end_reason, login_method, second_factor, ip, domain,
       user_agent, browser, os, file_count, total_bytes, files FROM logged
"""
_IDLE = """
SELECT session_id, last_event_at, account_id FROM open_sessions WHERE last_event_at <= %s ORDER BY last_event_at
LIMIT 5000 FOR UPDATE SKIP LOCKED
"""
_COUNT_OPEN = "SELECT count(*) FROM open_sessions"


def _params(event: dict[str, Any]) -> dict[str, Any]:
    p = dict(event)
    p["at"] = ms_to_dt(event["occurred_at"])
    for name in ("ip", "domain", "user_agent", "browser", "os", "second_factor", "failure_reason"):
        p.setdefault(name, None)
    return p


class SessionsProcessor:
    topic = "session-events"

    async def apply(self, conn: psycopg.AsyncConnection[Any], events: list[dict[str, Any]],
                    ctx: PipelineContext) -> None:
        ends: dict[str, tuple[dt.datetime, str]] = {}
        files: list[list[Any]] = [[], [], [], [], [], []]
        async with conn.pipeline(), conn.cursor() as cur:
            for event in events:
                kind = event["event_type"]
                if kind == "session.started":
                    await cur.execute(_START, _params(event))
                elif kind == "session.file_transferred":
                    for column, value in zip(files, (event["event_id"], event["session_id"], event["account_id"],
                                                     ms_to_dt(event["occurred_at"]), event["size_bytes"],
                                                     event["mime_type"]), strict=True):
                        column.append(value)
                elif kind == "session.ended":
                    ends[event["session_id"]] = (ms_to_dt(event["occurred_at"]), event["reason"])
                elif kind == "session.login_failed":
                    await cur.execute(_FAILED, _params(event))
            if files[0]:
                await cur.execute(_FILES, files)
                await cur.execute(_TOUCH, (files[1], files[3]))
        if ends:
            await self._close(conn, ends, ctx)

    async def _close(self, conn: psycopg.AsyncConnection[Any], ends: dict[str, tuple[dt.datetime, str]],
                     ctx: PipelineContext) -> int:
        ids = list(ends)
        months = sorted({at.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
                         for at, _ in ends.values()})
        await conn.execute("SELECT session_logs_partition(m) FROM unnest(%b::timestamptz[]) m", (months,))
        cur = await conn.execute(
            _CLOSE, {"ids": ids, "ended": [ends[i][0] for i in ids], "reasons": [ends[i][1] for i in ids]}
        )
        logs = await cur.fetchall()
        if logs:
            await conn.execute("DELETE FROM session_files WHERE session_id = ANY(%b)", ([r[0] for r in logs],))
        rows = []
        for (sid, account, started, ended, reason, method, factor, ip, domain, ua, browser, os_, n, total,
             files) in logs:
            rows.append(ctx.record("session-logs", account, "SessionLog", {
                "session_id": sid, "account_id": account, "started_at": dt_to_ms(started),
                "ended_at": dt_to_ms(ended), "end_reason": reason, "login_method": method,
                "second_factor": factor, "ip": ip, "domain": domain, "user_agent": ua, "browser": browser,
                "os": os_, "file_count": n, "total_bytes": total, "files": files[:FILES_ON_TOPIC],
            }))
        await ctx.enqueue(conn, rows)
        if rows:
            ctx.metrics.session_logs_written.inc(len(rows))
        return len(rows)

    async def tick(self, conn: psycopg.AsyncConnection[Any], now_ms: int, ctx: PipelineContext) -> None:
        idle_ms = ctx.settings.session_idle_timeout_s * 1000
        cur = await conn.execute(_IDLE, (ms_to_dt(now_ms - idle_ms),))
        idle = await cur.fetchall()
        erased = await erased_among(conn, ctx.keys, (row[2] for row in idle), now_ms)
        if erased:
            # The account's erasure is open: its session is erased, never logged (nor published).
            doomed = [sid for sid, _, account in idle if account in erased]
            await conn.execute("DELETE FROM session_files WHERE session_id = ANY(%b)", (doomed,))
            await conn.execute("DELETE FROM open_sessions WHERE session_id = ANY(%b)", (doomed,))
            idle = [row for row in idle if row[2] not in erased]
        if idle:
            # A timed-out session ends at its last activity plus the timeout.
            await self._close(conn, {sid: (last + dt.timedelta(milliseconds=idle_ms), "timeout")
                                     for sid, last, _ in idle}, ctx)
        cur = await conn.execute(_COUNT_OPEN)
        row = await cur.fetchone()
        ctx.metrics.open_sessions.set(row[0] if row else 0)
