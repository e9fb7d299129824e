#!/usr/bin/env python3
"""Retention sweep of expired session logs: rows erased per second, and the longest a concurrent
writer waited, against a baseline of one ``DELETE FROM session_logs WHERE ended_at < $1`` on the
same data, measured in the same run on the same embedded PostgreSQL.

    .venv/bin/python benchmarks/retention_sweep.py [--rows 1000000]

Data: ``--rows`` expired session logs spread evenly over eleven and a half months (so eleven
month partitions are wholly past the cutoff and one is cut in the middle), plus 5% of live rows
after the cutoff. While each method runs, a writer inserts one session log per transaction into
the month the cutoff falls in (the month under batched deletes) and records each insert's latency.
The third run puts one account under legal hold, so no month can be dropped and every expired row
goes through batched deletes: the worst case for the sweep.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lifecycle.connectors.base.sink import RetentionOrder  # noqa: E402
from lifecycle.connectors.postgres import PostgresSink  # noqa: E402
from lifecycle.core.timeutil import dt_to_ms  # noqa: E402
from lifecycle.embedded.postgres import EmbeddedPostgres  # noqa: E402
from lifecycle.streams.runtime.database import apply_schema  # noqa: E402

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
CUTOFF = dt.datetime(2024, 12, 16, tzinfo=dt.UTC)
LIVE_END = dt.datetime(2024, 12, 31, tzinfo=dt.UTC)
HELD = "acc-0"


def seed(dsn: str, rows: int) -> None:
    live = rows // 20
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT session_logs_partition(m) FROM generate_series(%s::timestamptz, %s, '1 month') m",
                     (START, LIVE_END))
        for count, lo, hi in ((rows, START, CUTOFF), (live, CUTOFF, LIVE_END)):
            conn.execute(
                "INSERT INTO session_logs (session_id, account_id, started_at, ended_at, end_reason, login_method, "
                "ip, user_agent, file_count, total_bytes, files) "
                "SELECT 's-' || %(tag)s || '-' || i, 'acc-' || (i %% 50000), t - interval '20 minutes', t, 'logout', "
                "'password', '198.51.100.' || (i %% 250), 'Mozilla/5.0 bench', 2, 4096, "
                "'[{\"size_bytes\": 2048, \"mime_type\": \"application/pdf\"}]'::jsonb "
                "FROM generate_series(1, %(n)s) i, "
                "LATERAL (SELECT %(lo)s::timestamptz "
                "+ (%(hi)s::timestamptz - %(lo)s::timestamptz) * (i::float8 / %(n)s) "
                "- interval '1 second' AS t) x",
                {"tag": lo.strftime("%Y%m%d"), "n": count, "lo": lo, "hi": hi})
        conn.execute("VACUUM ANALYZE session_logs")


class Writer(threading.Thread):
    """One session log per transaction, into the month the cutoff falls in."""

    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        self.dsn, self.stop, self.latencies = dsn, threading.Event(), []

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                start = time.perf_counter()
                conn.execute("INSERT INTO session_logs (session_id, account_id, started_at, ended_at, end_reason, "
                             "login_method, file_count, total_bytes, files) VALUES (%s, 'acc-w', %s, %s, 'logout', "
                             "'password', 0, 0, '[]')", (str(uuid.uuid4()), LIVE_END, LIVE_END))
                self.latencies.append(time.perf_counter() - start)
                time.sleep(0.002)


def timed(dsn: str, work) -> tuple[float, int, list[float]]:
    writer = Writer(dsn)
    writer.start()
    time.sleep(0.5)
    start = time.perf_counter()
    erased = work()
    elapsed = time.perf_counter() - start
    writer.stop.set()
    writer.join()
    return elapsed, erased, writer.latencies


def baseline(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("DELETE FROM session_logs WHERE ended_at < %s", (CUTOFF,)).rowcount


def sweep(dsn: str, held: frozenset[str] = frozenset()) -> int:
    sink = PostgresSink(dsn)
    try:
        return sink.expire(RetentionOrder("bench", "session_logs", dt_to_ms(CUTOFF), "erase", held)).items
    finally:
        sink.close()


def sweep_with_hold(dsn: str) -> int:
    """An account under legal hold in every month: no month can be dropped, all goes in batches."""
    return sweep(dsn, frozenset({HELD}))


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS session_logs CASCADE")
    apply_schema(dsn)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    pg = EmbeddedPostgres(state / "pg", state / "pg.log")
    pg.start()
    try:
        dsn = pg.dsn()
        apply_schema(dsn)
        results = {}
        for name, method in (("baseline: one DELETE", baseline), ("retention sweep", sweep),
                             ("sweep, 1 account held", sweep_with_hold)):
            reset(dsn)
            t = time.perf_counter()
            seed(dsn, args.rows)
            print(f"{name}: seeded {args.rows} expired rows in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            elapsed, erased, latencies = timed(dsn, lambda m=method: m(dsn))
            with psycopg.connect(dsn) as conn:
                left = conn.execute("SELECT count(*) FROM session_logs WHERE ended_at < %s AND account_id <> %s",
                                    (CUTOFF, HELD)).fetchone()[0]
            assert erased >= args.rows * 0.99 and left == 0, (name, erased, left)
            latencies.sort()
            results[name] = (elapsed, erased, latencies)
        base = results["baseline: one DELETE"]
        print(f"rows expired: {args.rows}; writer: one insert per transaction into the month being cut")
        print(f"{'method':24} {'seconds':>8} {'rows/s':>10} {'x baseline':>10} {'writes':>7} "
              f"{'write p50 ms':>12} {'write max ms':>12}")
        for name, (elapsed, erased, lat) in results.items():
            print(f"{name:24} {elapsed:8.2f} {erased / elapsed:10.0f} {base[0] / elapsed:10.1f} {len(lat):7d} "
                  f"{lat[len(lat) // 2] * 1000:12.1f} {lat[-1] * 1000:12.1f}")
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
