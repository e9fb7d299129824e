#!/usr/bin/env python3
"""The storage budget: bytes PostgreSQL keeps per account and per event type, while the events are
inside their retention windows and after the windows that end within 13 months have passed,
beside the baseline of the same events' own bytes (Avro, as they travel on the topics), measured
in the same run.

    .venv/bin/python benchmarks/storage_budget.py [--accounts 5000] [--visitors 7500]

Load: the demo's day of traffic (lifecycle/demo.py ``simulate``: registrations, sessions with
files, consents, newsletter, page views, restrictions, closures), on the embedded stack with the
worker and every shipped store, then the demo's events 13 months and a day later, which move the
event-time clock past every window shorter than that (session logs, failed logins, consent
history not backing a consent in force, raw events, page views, the deduplication window).

Each table is measured as PostgreSQL stores it (``pg_total_relation_size`` over its partitions:
heap, TOAST and indexes, after VACUUM FULL) and divided by the accounts simulated; ``per event`` divides
a table by the events of the types that write it. Figures from a few thousand accounts include
each table's fixed pages (8 kB a relation and an index at least): they are upper bounds per row.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lifecycle.connectors.emitter import Emitter  # noqa: E402
from lifecycle.core.config import Settings  # noqa: E402
from lifecycle.demo import ProgressLine, _send, _wait, handled, simulate, thirteen_months_later, total  # noqa: E402
from lifecycle.supervisor import running_pipeline  # noqa: E402

# Which event types write each table (the processors, docs/processors.md); tables written by no
# event (erasure, access, retention records) are divided by accounts alone.
WRITERS = {
    "processed_events": "*",
    "accounts": "account.", "account_visitors": "account.", "legal_holds": "account.legal_hold",
    "open_sessions": "session.started", "session_files": "session.file_transferred",
    "session_logs": "session.", "failed_logins": "session.login_failed",
    "consent_history": "consent.", "consent_current": "consent.cookies", "newsletter": "consent.newsletter",
    "traffic_pending": "analytics.", "traffic_aggregates": "analytics.",
}

_SIZES = """
SELECT c.relname,
       CASE WHEN c.relkind = 'p'
            THEN (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t)
            ELSE pg_total_relation_size(c.oid) END AS bytes
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY 1
"""


def measure(dsn: str) -> dict[str, tuple[int, int]]:
    """table -> (rows, bytes), after VACUUM FULL: dead rows, and the pages they leave (which plain
    VACUUM keeps for reuse), are not what is kept."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM FULL")
        out = {}
        for table, size in conn.execute(_SIZES).fetchall():
            rows = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            out[str(table)] = (int(rows[0]) if rows else 0, int(size))
        return out


def event_bytes(settings: Settings, events: list[dict[str, Any]]) -> collections.Counter[str]:
    """The baseline: the events' own Avro bytes (framed, as on the topic), by event type."""
    sizes: collections.Counter[str] = collections.Counter()
    with Emitter(settings) as emitter:
        for e in events:
            sizes[e["event_type"]] += len(emitter.codec.encode_event(e))
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--visitors", type=int, default=7500)
    args = parser.parse_args()
    say = print
    import dataclasses
    import tempfile

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="storage-budget-") as state:
        settings = dataclasses.replace(Settings.from_env({}), state_dir=Path(state), clock="event")
        with running_pipeline(settings, say) as (live, _stack):
            day_one = list(simulate(args.accounts, args.visitors))
            counts = collections.Counter(e["event_type"] for e in day_one)
            baseline = event_bytes(live, day_one)
            progress = ProgressLine(say)
            sent = _send(live, iter(day_one), progress, "day one")
            _wait(live, progress, 600, "day one", lambda m: handled(m) >= sent)
            time.sleep(3)  # a tick and a relay round
            inside = measure(live.postgres_dsn or "")
            sent += _send(live, thirteen_months_later(), progress, "13 months later")
            _wait(live, progress, 600, "13 months later", lambda m: handled(m) >= sent
                  and total(m, "lifecycle_erasure_requests_completed_total")
                  >= total(m, "lifecycle_erasure_requests_opened_total")
                  and total(m, "lifecycle_retention_items_deleted_total") > 0)
            time.sleep(5)  # the last sweeps' acknowledgements and a tick
            retired_keys(live.postgres_dsn or "", say)
            after = measure(live.postgres_dsn or "")
    report(args.accounts, counts, baseline, inside, after)
    say(f"\n({time.monotonic() - started:.0f} s)")
    return 0


def retired_keys(dsn: str, say: Any, deadline_s: float = 600) -> None:
    """Wait until the quiet data keys marked retiring are gone: they go a grace period of wall time
    after the mark (docs/crypto-shredding.md, "How long a key lives")."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM data_keys WHERE retiring_at IS NOT NULL").fetchone()
        if not row or not row[0]:
            return
        say(f"waiting for {row[0]} quiet data keys to be deleted after their grace period")
        time.sleep(10)
    raise SystemExit("quiet data keys still retiring after the deadline")


def report(accounts: int, counts: collections.Counter[str], baseline: collections.Counter[str],
           inside: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> None:
    events, event_total = sum(counts.values()), sum(baseline.values())
    print(f"\n{accounts} accounts, {events} events of day one, {event_total} bytes as Avro on the topics "
          f"(baseline: {event_total / accounts:.0f} B per account, {event_total / events:.0f} B per event)")
    print(f"\n{'table':32} {'rows in':>9} {'B in':>10} {'B/row':>6} {'per event':>9} {'rows after':>10} "
          f"{'B after':>9} {'B/account after':>15}")
    for table in sorted(set(inside) | set(after)):
        rows_in, bytes_in = inside.get(table, (0, 0))
        rows_after, bytes_after = after.get(table, (0, 0))
        if not rows_in and not rows_after:
            continue
        prefix = WRITERS.get(table)
        writers = events if prefix == "*" else sum(n for t, n in counts.items() if prefix and t.startswith(prefix))
        per_event = f"{bytes_in / writers:.0f}" if writers else "-"
        per_row = f"{bytes_in / rows_in:.0f}" if rows_in else "-"
        print(f"{table:32} {rows_in:>9} {bytes_in:>10} {per_row:>6} {per_event:>9} {rows_after:>10} "
              f"{bytes_after:>9} {bytes_after / accounts:>15.1f}")
    kept_in, kept_after = sum(b for _, b in inside.values()), sum(b for _, b in after.values())
    print(f"\ntotal kept in PostgreSQL: inside the windows {kept_in / accounts:.0f} B per account "
          f"({kept_in / event_total:.2f}x the events' own bytes); after them {kept_after / accounts:.0f} B "
          f"per account ({kept_after / event_total:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
