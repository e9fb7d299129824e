#!/usr/bin/env python3
"""Cost as the work grows (issue 30): the same work on an empty pipeline and on one that has
already applied tens of millions of events and knows a million accounts, in one run on one
embedded broker and PostgreSQL.

    .venv/bin/python benchmarks/growth.py [--events 60000] [--preload 20000000] [--accounts 1000000]

(a) session events into PostgreSQL (benchmarks/ceiling.py's mix, sealed as the SDK seals them),
    `lifecycle worker` from its first applied event to its last: empty database against grown;
(b) erasures opened: `--closures` accounts registered, then closed, on the same topic; from the
    first erasures opened (a batch: those are not counted) to the last: with no other account
    known against a million;
(c) the ratios grown / empty; the goal is >= 0.9 for both.

Grown, and how it is made fast: plain SQL into the tables the intake writes, no events through the
pipeline (that would take hours here). `processed_events` gets ``--preload`` ids and times spread
over the 34 days of the deduplication window (day partitions made by `processed_events_partition`, as the
intake makes them), random UUIDs as real ids are; `session_logs` one row per ten of them (a
session with eight files) spread over the twelve months the window keeps; `accounts` and
`account_visitors` ``--accounts`` rows; then VACUUM ANALYZE. The measured events land in the
grown tables' newest partitions, each already holding its share.

Each side runs ``--rounds`` times, alternating, each round on topics of its own (and, for empty,
a database of its own; the grown database is made once); each side keeps its best round, because
this machine's figures drift by tens of percent between minutes. Progress is read from
`intake_offsets` (the same cheap probe on both sides; counting 20 million rows would not be).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ceiling import T0, load_topic, session_events  # noqa: E402

from lifecycle.core.config import Settings  # noqa: E402
from lifecycle.embedded import Stack  # noqa: E402
from lifecycle.embedded.process import free_port  # noqa: E402
from lifecycle.streams.runtime.database import apply_schema  # noqa: E402
from lifecycle.topics import apply_topics, load_spec  # noqa: E402

DAY_MS = 86_400_000
WINDOW_DAYS = 34


def database(settings: Settings, name: str) -> Settings:
    with psycopg.connect(settings.postgres_dsn or "", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    other = dataclasses.replace(settings, postgres_dsn=psycopg.conninfo.make_conninfo(settings.postgres_dsn or "",
                                                                                       dbname=name))
    apply_schema(other.postgres_dsn or "")
    return other


def topics(settings: Settings, prefix: str) -> Settings:
    other = dataclasses.replace(settings, topic_prefix=prefix)
    apply_topics(other, load_spec(other.topic_spec))
    return other


def preload(settings: Settings, events: int, accounts: int) -> float:
    """Fill the grown database; returns the seconds it took."""
    started = time.monotonic()
    last_day = time.gmtime(T0 / 1000)
    with psycopg.connect(settings.postgres_dsn or "", autocommit=True) as conn:
        conn.execute("SELECT processed_events_partition(%s::date - d, %s::date - %s) FROM generate_series(0, %s) d",
                     (time.strftime("%Y-%m-%d", last_day),) * 2 + (WINDOW_DAYS, WINDOW_DAYS))
        step = 2_000_000
        for lo in range(0, events, step):
            conn.execute("INSERT INTO processed_events (event_id, event_day, occurred_at, topic, processed_at) "
                         "SELECT gen_random_uuid(), d, (d + (i %% 86400) * interval '1 second') AT TIME ZONE 'UTC', "
                         "'session-events', now() FROM generate_series(%s, %s) i, "
                         "LATERAL (SELECT %s::date - (i %% %s) AS d) x",
                         (lo, min(lo + step, events) - 1, time.strftime("%Y-%m-%d", last_day), WINDOW_DAYS))
            print(f"  processed_events: {min(lo + step, events):,} rows", file=sys.stderr)
        sessions = events // 10
        conn.execute("SELECT session_logs_partition(to_timestamp(%s / 1000.0) - make_interval(months => m)) "
                     "FROM generate_series(0, 11) m", (T0,))
        conn.execute("""
            INSERT INTO session_logs (session_id, account_id, started_at, ended_at, end_reason, login_method,
                                      ip, domain, user_agent, browser, os, file_count, total_bytes, files)
            SELECT 'pre-' || i, 'pre-' || (i %% %(accounts)s), t - interval '1 minute', t, 'logout', 'password',
                   '198.51.100.1', 'app.example.test', 'bench/1.0', 'firefox', 'linux', 8, 8036,
                   '[{"size_bytes": 1000, "mime_type": "application/pdf"}]'::jsonb
            FROM generate_series(1, %(sessions)s) i,
                 LATERAL (SELECT to_timestamp(%(t0)s / 1000.0) - (i %% 330) * interval '1 day'
                                 - (i %% 86400) * interval '1 second' AS t) x""",
                     {"accounts": max(accounts, 1), "sessions": sessions, "t0": T0 - DAY_MS})
        print(f"  session_logs: {sessions:,} rows", file=sys.stderr)
        conn.execute("INSERT INTO accounts (account_id, status, email, first_name, last_name, email_verified, "
                     "registered_at, updated_at) SELECT 'pre-' || i, 'active', 'pre' || i || '@example.test', "
                     "'Given', 'Family', true, now(), now() FROM generate_series(0, %s) i", (accounts - 1,))
        conn.execute("INSERT INTO account_visitors SELECT 'pre-' || i, 'vis-pre-' || i FROM generate_series(0, %s) i",
                     (accounts - 1,))
        print(f"  accounts, account_visitors: {accounts:,} rows each", file=sys.stderr)
        conn.execute("VACUUM ANALYZE")
    return time.monotonic() - started


def rate(settings: Settings, work: Path, progress: Callable[[psycopg.Connection], int], n: int) -> float:
    """Items per second (wall), from the first time ``progress`` counts something to the n-th item,
    one worker; the items of that first reading are not counted."""
    env = {**os.environ, **settings.to_env(), "LIFECYCLE_LOG_LEVEL": "warning"}
    with open(work / "worker.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lifecycle", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        with psycopg.connect(settings.postgres_dsn or "", autocommit=True) as conn:
            deadline = time.monotonic() + 900
            while (first := progress(conn)) == 0:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"the worker did not start; see {work / 'worker.log'}")
                time.sleep(0.02)
            start = time.perf_counter()  # what the first reading counts was done before it: not timed
            while (done := progress(conn)) < n:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the worker did {done} of {n}; see {work / 'worker.log'}")
                time.sleep(0.02)
            return (n - first) / (time.perf_counter() - start)
    finally:
        proc.terminate()
        proc.wait(30)


def applied(topic: str) -> Callable[[psycopg.Connection], int]:
    def count(conn: psycopg.Connection) -> int:
        row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM intake_offsets WHERE topic = %s",
                           (topic,)).fetchone()
        return int(row[0]) if row else 0
    return count


def opened(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM erasure_requests").fetchone()
    return int(row[0]) if row else 0


def closures(n: int, tag: str) -> list[dict]:
    """Registrations, then closures of the same accounts (per-account order on the topic)."""
    out = []
    for kind, at in (("account.registered", T0), ("account.closed", T0 + 60_000)):
        for i in range(n):
            fields = {"email": f"u{i}@example.test", "first_name": "Given", "last_name": "Family"} \
                if kind == "account.registered" else {}
            out.append({"event_id": str(uuid.uuid4()), "event_type": kind, "occurred_at": at + i,
                        "account_id": f"acc-{tag}{i}", "source": "bench", **fields})
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=60_000, help="session events measured per round")
    p.add_argument("--preload", type=int, default=20_000_000, help="events the grown pipeline has applied")
    p.add_argument("--accounts", type=int, default=1_000_000, help="accounts the grown pipeline knows")
    p.add_argument("--closures", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lifecycle-growth-"))
    base = Settings.from_env({"LIFECYCLE_STATE_DIR": str(work / "state")})
    with Stack(base) as info:
        settings = dataclasses.replace(info.settings, clock="event", erasure_stores=("postgres",),
                                       http_port=free_port())
        grown = database(settings, "growth_grown")
        print(f"preloading the grown database: {args.preload:,} events applied, {args.accounts:,} accounts",
              file=sys.stderr)
        took = preload(grown, args.preload, args.accounts)
        print(f"preloaded in {took:.0f} s", file=sys.stderr)
        results: dict[tuple[str, str], list[float]] = {}
        for r in range(args.rounds):
            for side in ("empty", "grown"):
                db = grown if side == "grown" else database(settings, f"growth_empty_{r}")
                tag = f"{side[0]}{r}"
                s = topics(db, f"growth-{tag}-s.")
                load_topic(s, s.topic("session-events"), session_events(args.events, tag), seal=True)
                n = args.events // 10 * 10
                results.setdefault(("sessions", side), []).append(
                    rate(s, work, applied(s.topic("session-events")), n))
                a = topics(db, f"growth-{tag}-a.")
                before = opened_now(a)
                load_topic(a, a.topic("account-events"), closures(args.closures, tag), seal=True)
                results.setdefault(("erasures", side), []).append(
                    rate(a, work, lambda c, b=before: opened(c) - b, args.closures))
                print(f"round {r} {side}: sessions {results[('sessions', side)][-1]:.0f}/s, "
                      f"erasures opened {results[('erasures', side)][-1]:.0f}/s", file=sys.stderr)
        sizes = table_sizes(grown)
    print(f"grown: {args.preload:,} events applied (processed_events), {args.preload // 10:,} session logs, "
          f"{args.accounts:,} accounts; preloaded in {took:.0f} s")
    print("  " + ", ".join(f"{t} {b / 1e9:.2f} GB" for t, b in sizes))
    print(f"{'figure':44} {'empty':>9} {'grown':>9} {'grown/empty':>12}   rounds (empty | grown)")
    for what, unit in (("sessions", "session events/s"), ("erasures", "erasures opened/s")):
        empty, full = max(results[(what, "empty")]), max(results[(what, "grown")])
        rounds = " ".join(f"{x:.0f}" for x in results[(what, "empty")]) + " | " + \
            " ".join(f"{x:.0f}" for x in results[(what, "grown")])
        print(f"{unit:44} {empty:9.0f} {full:9.0f} {full / empty:12.2f}   {rounds}")


def opened_now(settings: Settings) -> int:
    with psycopg.connect(settings.postgres_dsn or "") as conn:
        return opened(conn)


def table_sizes(settings: Settings) -> list[tuple[str, int]]:
    with psycopg.connect(settings.postgres_dsn or "") as conn:
        rows = conn.execute("""
            SELECT c.relname, CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)
                                                              FROM pg_partition_tree(c.oid) t)
                                   ELSE pg_total_relation_size(c.oid) END
            FROM pg_class c WHERE c.relname IN ('processed_events', 'session_logs', 'accounts', 'account_visitors')
            ORDER BY 1""").fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]


if __name__ == "__main__":
    main()
