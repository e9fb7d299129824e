#!/usr/bin/env python3
"""What a given load needs, computed from this machine's measured per-event costs (issue 30,
docs/scaling.md):

    .venv/bin/python benchmarks/scaling_model.py [--accounts 5000] [--target-accounts 100000000]
                                                 [--target-events-per-day 1000000000] [--peak 3]

Measured here, in one run on the embedded stack:
(a) a day of mixed traffic (lifecycle/demo.py ``simulate``: registrations, sessions with files,
    consents, page views, closures), applied by one `lifecycle worker`: per event, the worker's
    CPU seconds, PostgreSQL's CPU seconds (the postmaster and its backends, from /proc), the rows
    PostgreSQL wrote (pg_stat_database) and the WAL it wrote (pg_current_wal_lsn); per account,
    the bytes kept in PostgreSQL while the events are inside their windows;
(b) where one PostgreSQL stops on this machine: the dedupe insert the intake runs
    (``processed_events_insert``, 4,000 ids a statement) and COPY of the same rows, rows per
    second over one and two connections;
(c) the model: for the target, events per second (average and ``--peak`` times it), worker cores
    and processes, input partitions, PostgreSQL write rate, CPU and WAL, storage per day and at
    steady state, and how many PostgreSQL servers of this machine's per-core speed that is.

The model is linear in the measured costs: it says where the load has to be split, not how a
bigger server behaves; docs/scaling.md states its assumptions and the design past one server.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import datetime as dt
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu import CpuMeter  # noqa: E402
from stack import bench_stack  # noqa: E402

from lifecycle.connectors.emitter import Emitter  # noqa: E402
from lifecycle.core.config import Settings  # noqa: E402
from lifecycle.demo import simulate  # noqa: E402

# How long each table keeps what an event writes (deploy/retention.yaml; docs/performance.md
# "Storage budget"): the steady state is a day's bytes times these days.
KEPT_DAYS = {"processed_events": 34, "session_logs": 365, "failed_logins": 365, "consent_history": 395,
             "traffic_aggregates": 760, "traffic_suppressed": 760}
PER_ACCOUNT = ("accounts", "account_visitors", "consent_current", "newsletter", "legal_holds")
BATCH = 4000


def _stat(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """(rows written in this database, WAL position in bytes)."""
    row = conn.execute("SELECT tup_inserted + tup_updated + tup_deleted, pg_current_wal_lsn() - '0/0'::pg_lsn "
                       "FROM pg_stat_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def measure_day(settings: Settings, accounts: int, work: Path) -> dict[str, Any]:
    events = list(simulate(accounts, accounts * 3 // 2))
    with Emitter(settings) as emitter:
        for e in events:
            emitter.emit(e)
        emitter.flush(timeout_s=300)
    n = len(events)
    env = {**os.environ, **settings.to_env(), "LIFECYCLE_LOG_LEVEL": "warning"}
    with psycopg.connect(settings.postgres_dsn or "", autocommit=True) as conn:
        def applied() -> int:
            row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM intake_offsets").fetchone()
            return int(row[0]) if row else 0

        with open(work / "worker.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "lifecycle", "worker"], env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 900
            # Costs are counted from the first batch applied: the worker's start (imports, schema,
            # keys) is not a per-event cost; what the first reading already holds is not counted.
            while (first := applied()) == 0:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"the worker did not start; see {work / 'worker.log'}")
                time.sleep(0.02)
            meter = CpuMeter()
            rows0, wal0 = _stat(conn)
            while (done := applied()) < n:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"the worker applied {done} of {n}; see {work / 'worker.log'}")
                time.sleep(0.1)
            time.sleep(2)  # the outbox relay's last round
            used = meter.used()
            worker_s, postgres_s = used["worker"], used["postgresql"]
            rows1, wal1 = _stat(conn)
        finally:
            proc.terminate()
            proc.wait(30)
        conn.execute("VACUUM")
        sizes = dict(conn.execute("""
            SELECT c.relname, CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)
                                                              FROM pg_partition_tree(c.oid) t)
                                   ELSE pg_total_relation_size(c.oid) END
            FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
              AND NOT c.relispartition""").fetchall())
    kinds = collections.Counter(e["event_type"].split(".")[0] for e in events)
    return {"events": n, "counted": n - first, "kinds": kinds, "accounts": accounts, "worker_cpu_s": worker_s,
            "postgres_cpu_s": postgres_s, "rows": rows1 - rows0, "wal": wal1 - wal0,
            "sizes": {str(k): int(v) for k, v in sizes.items()}}


async def _insert_rate(dsn: str, connections: int, batches: int, copy: bool) -> float:
    """Rows per second into processed_events, ``connections`` writers at once."""
    day = "2026-01-15"
    start_of_day = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)

    async def writer(k: int) -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=False) as conn:
            for b in range(batches):
                ids = [uuid.uuid4() for _ in range(BATCH)]
                # in time order, as events arrive: each writer its own hour of the day
                times = [start_of_day + dt.timedelta(hours=k, milliseconds=b * BATCH + j) for j in range(BATCH)]
                async with conn.transaction():
                    if copy:
                        async with conn.cursor().copy(
                                "COPY processed_events (event_id, event_day, occurred_at, topic, processed_at) "
                                "FROM STDIN") as cp:
                            for i, at in zip(ids, times, strict=True):
                                await cp.write_row((i, day, at, "session-events", at))
                    else:
                        await conn.execute("SELECT count(*) FROM processed_events_insert("
                                           "%b::uuid[], %b::date[], %b::timestamptz[], 'session-events', now())",
                                           (ids, [start_of_day.date()] * BATCH, times))

    start = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(connections)))
    return connections * batches * BATCH / (time.perf_counter() - start)


def ceilings(settings: Settings) -> dict[str, float]:
    dsn = settings.postgres_dsn or ""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT processed_events_partition('2026-01-15', '2026-01-01')")
    out = {}
    for copy in (False, True):
        for connections in (1, 2):
            rate = asyncio.run(_insert_rate(dsn, connections, 150 // connections, copy))
            out[f"{'COPY' if copy else 'dedupe insert (unnest, ON CONFLICT)'}, {connections} connection(s)"] = rate
    return out


@dataclasses.dataclass
class Model:
    events_per_day: float
    accounts: float
    peak: float
    day: dict[str, Any]
    ceiling_rows_s: float
    cores_here: int

    def rows(self) -> list[tuple[str, str]]:
        d, n, counted = self.day, self.day["events"], self.day["counted"]
        avg = self.events_per_day / 86_400
        peak = avg * self.peak
        worker_core = d["worker_cpu_s"] / counted
        pg_core = d["postgres_cpu_s"] / counted
        rows_per_event = d["rows"] / counted
        wal_per_event = d["wal"] / counted
        account_bytes = sum(d["sizes"].get(t, 0) for t in PER_ACCOUNT) / d["accounts"]
        event_bytes = {t: b / n for t, b in d["sizes"].items() if t in KEPT_DAYS}
        worker_cores = peak * worker_core
        processes = math.ceil(worker_cores / 0.75)  # a worker waits on PostgreSQL a quarter of its time
        partitions = 2 ** math.ceil(math.log2(max(processes * 2, 4)))
        pg_cores = peak * pg_core
        write_rows = peak * rows_per_event
        per_day = sum(event_bytes.values()) * self.events_per_day
        steady = sum(b * self.events_per_day * KEPT_DAYS[t] for t, b in event_bytes.items()) \
            + account_bytes * self.accounts
        per_server_events = self.ceiling_rows_s / rows_per_event
        return [
            ("events per second, average / peak", f"{avg:,.0f} / {peak:,.0f}"),
            ("worker CPU per event (measured)", f"{worker_core * 1e6:.0f} µs"),
            ("PostgreSQL CPU per event (measured)", f"{pg_core * 1e6:.0f} µs"),
            ("rows written per event (measured)", f"{rows_per_event:.2f}"),
            ("WAL per event (measured)", f"{wal_per_event:,.0f} B"),
            ("worker cores at peak", f"{worker_cores:,.1f}"),
            ("worker processes (at 75% of a core each)", f"{processes:,}"),
            ("partitions per input topic (2 per process, a power of 2)", f"{partitions:,}"),
            ("PostgreSQL cores at peak (this machine's speed)", f"{pg_cores:,.1f}"),
            ("PostgreSQL rows written per second at peak", f"{write_rows:,.0f}"),
            ("WAL at peak", f"{peak * wal_per_event / 1e6:,.1f} MB/s"),
            ("storage written per day (tables the events keep)", f"{per_day / 1e9:,.1f} GB"),
            ("storage at steady state (every window full, all accounts)", f"{steady / 1e12:,.2f} TB"),
            ("of which per account (accounts, visitors, consent, newsletter)",
             f"{account_bytes:,.0f} B/account, {account_bytes * self.accounts / 1e9:,.0f} GB"),
            ("events/s one PostgreSQL here takes, by its CPU per event", f"{self.cores_here / pg_core:,.0f}"),
            ("events/s one PostgreSQL here takes, by the insert ceiling / rows per event",
             f"{per_server_events:,.0f}"),
            ("servers like this one at peak, by write ceiling", f"{math.ceil(peak / per_server_events):,}"),
            ("servers like this one at peak, by CPU", f"{math.ceil(pg_cores / self.cores_here):,}"),
        ]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--accounts", type=int, default=5000, help="accounts in the measured day")
    p.add_argument("--target-accounts", type=float, default=100e6)
    p.add_argument("--target-events-per-day", type=float, default=1e9)
    p.add_argument("--peak", type=float, default=3.0, help="peak over the day's average")
    args = p.parse_args()
    with bench_stack("scaling") as (settings, work):
        print(f"(a) a day of {args.accounts} accounts through one worker ...", file=sys.stderr)
        day = measure_day(settings, args.accounts, work)
        print("(b) insert ceilings ...", file=sys.stderr)
        limits = ceilings(settings)
    cores = os.cpu_count() or 1
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(day["kinds"].items()))
    print(f"(a) measured: {day['events']:,} events ({kinds}), costs over the {day['counted']:,} after the first batch,"
          f" {args.accounts:,} accounts; worker {day['worker_cpu_s']:.1f} CPU s, PostgreSQL "
          f"{day['postgres_cpu_s']:.1f} CPU s, {day['rows']:,} rows, {day['wal'] / 1e6:.1f} MB WAL")
    print(f"(b) one PostgreSQL here ({cores} cores), rows/s:")
    for name, rate in limits.items():
        print(f"    {name:52} {rate:12,.0f}")
    best_insert = max(v for k, v in limits.items() if k.startswith("dedupe"))
    model = Model(args.target_events_per_day, args.target_accounts, args.peak, day, best_insert, cores)
    print(f"(c) {args.target_accounts:,.0f} accounts, {args.target_events_per_day:,.0f} events a day, peak "
          f"{args.peak:g}x average:")
    for name, value in model.rows():
        print(f"    {name:72} {value}")


if __name__ == "__main__":
    main()
