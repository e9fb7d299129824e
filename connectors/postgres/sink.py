"""The pipeline's own PostgreSQL tables as a downstream store.

Erasure: at-least-once orders, exactly-once in effect. Every order of a batch is erased in ONE
transaction with set-based deletes (``= ANY(%s)`` over all the batch's identifiers), and a
receipt per request is written in that same transaction, so a redelivered order reports the
count of its first run. Tables of a category the order keeps (legal hold) are left alone; this
store has no pseudonymised form of its tables, so a category to pseudonymise is erased here.

Retention: each swept category is one or more tables, each with its time column. Expired rows go in batches of
BATCH_ROWS, one short transaction each, so a sweep never holds locks for long; session logs go a
whole month at a time where they can (partition detached concurrently, then dropped), and row by
row only in the month the cutoff falls in, or where an account under legal hold keeps rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import psycopg
from psycopg.rows import dict_row

from lifecycle.connectors.base.pg import SinkConnection
from lifecycle.connectors.base.sink import (
    AccessOrder,
    AckStatus,
    ErasureOrder,
    Expiry,
    HeldData,
    Outcome,
    RetentionOrder,
    RetentionSink,
    jsonable,
    required,
    unreachable,
)
from lifecycle.core.config import Settings
from lifecycle.core.pgroles import component_dsn
from lifecycle.core.timeutil import dt_to_ms, ms_to_dt

__all__ = ["PostgresSink", "ACCOUNT_TABLES", "SUBJECT_TABLES", "BATCH_ROWS"]

# Every table the pipeline writes that can hold an account's data, by its account_id column:
# (table, category).
ACCOUNT_TABLES = (("accounts", "account_profile"), ("account_visitors", "account_profile"),
                  ("open_sessions", "session_logs"), ("session_files", "session_logs"),
                  ("session_logs", "session_logs"), ("failed_logins", "security_information"))
SUBJECT_TABLES = (("consent_history", "subject_id", "consent_history"),
                  ("consent_current", "subject_id", "consent_history"),
                  ("newsletter", "subject_id", "newsletter_audience"),
                  ("traffic_pending", "visitor_id", "raw_analytics_events"),
                  ("traffic_pending", "account_id", "raw_analytics_events"))
BATCH_ROWS = 5000


@dataclasses.dataclass(frozen=True)
class _Swept:
    table: str
    time_column: str
    account_column: str | None = None  # where legal holds apply
    keep: str | None = None  # rows the window does not reach (SQL on alias t)


# Consent proof backing a consent still in force is kept as long as that consent is.
_BACKING = """NOT EXISTS (SELECT 1 FROM consent_current c WHERE c.subject_id = t.subject_id AND c.granted
                 AND c.expired_at IS NULL AND c.given_at = t.occurred_at)
   AND NOT (t.event_type = 'consent.newsletter_subscribed' AND EXISTS (
                 SELECT 1 FROM newsletter n WHERE n.subject_id = t.subject_id AND n.subscribed
                 AND n.updated_at = t.occurred_at))"""
SWEPT = {
    "session_logs": (_Swept("session_logs", "ended_at", "account_id"),),
    "security_information": (_Swept("failed_logins", "occurred_at", "account_id"),),
    # (current consents no longer in force: the worker's consent tick, which tombstones `consents` too)
    "consent_history": (_Swept("consent_history", "occurred_at", keep=_BACKING),),
    "traffic_aggregates": (_Swept("traffic_aggregates", "bucket_start"), _Swept("traffic_suppressed", "bucket_start")),
    "raw_analytics_events": (_Swept("traffic_pending", "occurred_at"),),
}


class PostgresSink(RetentionSink):
    """Delivery: at-least-once orders, exactly-once in effect (receipts in the same transaction)."""

    name = "postgres"
    retention_categories = tuple(SWEPT)
    holds = tuple(sorted({c for _, c in ACCOUNT_TABLES} | {c for _, _, c in SUBJECT_TABLES} | set(SWEPT)))
    database_grants = (
        "GRANT USAGE ON SCHEMA public TO {role}",
        "GRANT SELECT, DELETE ON " + ", ".join(sorted({t for t, _ in ACCOUNT_TABLES} | {t for t, _, _ in SUBJECT_TABLES}
                                                      | {s.table for tables in SWEPT.values() for s in tables}))
        + " TO {role}",
        "GRANT SELECT ON consent_current, newsletter TO {role}",  # what a consent still in force keeps
        "GRANT SELECT, INSERT ON erasure_receipts TO {role}",
        "GRANT {owner} TO {role}",  # month partitions of session_logs: detached and dropped
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresSink:
        required(settings.postgres_dsn, "LIFECYCLE_POSTGRES_DSN")
        return cls(component_dsn(settings, "store-postgres"))

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.db = SinkConnection(dsn, "SELECT 1", "postgres")  # its receipts table is in streams/runtime/schema.sql

    def erase(self, orders: list[ErasureOrder]) -> dict[str, Outcome]:
        request_of = {o.receipt_id: o.request_id for o in orders}
        with self.db.transaction() as conn:
            cur = conn.execute("SELECT request_id::text, status, items FROM erasure_receipts "
                               "WHERE store = %s AND request_id = ANY(%s::uuid[])", (self.name, list(request_of)))
            done = {request_of[rid]: Outcome(AckStatus(status), items) for rid, status, items in cur.fetchall()}
            todo = [o for o in orders if o.request_id not in done]
            if not todo:
                return done
            counts: dict[str, int] = {o.request_id: 0 for o in todo}
            kept: dict[str, bool] = {o.request_id: False for o in todo}
            for table, category in ACCOUNT_TABLES:
                self._erase_table(conn, todo, table, "account_id", category, counts, kept, by_subject=False)
            for table, column, category in SUBJECT_TABLES:
                self._erase_table(conn, todo, table, column, category, counts, kept, by_subject=True)
            outcomes = {o.request_id: Outcome(AckStatus.RETAINED_LEGAL_HOLD if kept[o.request_id]
                                              else AckStatus.ERASED if counts[o.request_id]
                                              else AckStatus.NOTHING_FOUND,
                                              counts[o.request_id]) for o in todo}
            with conn.cursor() as c:
                c.executemany("INSERT INTO erasure_receipts (request_id, store, status, items) "
                              "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                              [(o.receipt_id, self.name, outcomes[o.request_id].status, outcomes[o.request_id].items)
                               for o in todo])
            return {**done, **outcomes}

    def verify(self, orders: list[ErasureOrder]) -> dict[str, int]:
        found = {o.request_id: 0 for o in orders}
        with self.db.transaction() as conn:
            for table, category in ACCOUNT_TABLES:
                _count_left(conn, orders, table, "account_id", category, found, by_subject=False)
            for table, column, category in SUBJECT_TABLES:
                _count_left(conn, orders, table, column, category, found, by_subject=True)
        return found

    def export(self, orders: list[AccessOrder]) -> dict[str, HeldData]:
        out = {}
        with self.db.transaction() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one consistent copy
            for order in orders:
                data = held_rows(conn, order.account_id, order.subjects)
                out[order.request_id] = HeldData(data, sum(len(rows) for rows in data.values()))
        return out

    def subject_ids(self) -> list[str]:
        union = " UNION ".join(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL" for table, column in
                               [(t, "account_id") for t, _ in ACCOUNT_TABLES] + [(t, c) for t, c, _ in SUBJECT_TABLES])
        with self.db.transaction() as conn:
            return [row[0] for row in conn.execute(union).fetchall()]

    @staticmethod
    def _erase_table(conn: psycopg.Connection[Any], orders: list[ErasureOrder], table: str, column: str,
                     category: str, counts: dict[str, int], kept: dict[str, bool], *, by_subject: bool) -> None:
        owner: dict[str, str] = {}
        keeping: dict[str, str] = {}
        for order in orders:
            for subject in (order.subjects if by_subject else (order.account_id,)):
                (keeping if order.keeps(category) else owner)[subject] = order.request_id
        if owner:
            cur = conn.execute(f"DELETE FROM {table} WHERE {column} = ANY(%s) RETURNING {column}", (list(owner),))
            for (subject,) in cur.fetchall():
                counts[owner[subject]] += 1
        if keeping:
            cur = conn.execute(f"SELECT DISTINCT {column} FROM {table} WHERE {column} = ANY(%s)", (list(keeping),))
            for (subject,) in cur.fetchall():
                kept[keeping[subject]] = True

    def expire(self, order: RetentionOrder) -> Expiry:
        cutoff = ms_to_dt(order.cutoff_ms)
        held = sorted(order.held_accounts)
        items, oldest = 0, []
        with unreachable("postgres", psycopg.OperationalError):
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                for swept in SWEPT[order.category]:
                    if swept.table == "session_logs":
                        items += _expire_months(conn, cutoff, held)
                    else:
                        items += _delete_in_batches(conn, swept, swept.table, cutoff, held)
                    oldest.append(_oldest(conn, swept, held))
        return Expiry(items, min((o for o in oldest if o is not None), default=None))

    def plan(self, order: RetentionOrder) -> int:
        """How many items a sweep of ``order`` would erase now (nothing is erased)."""
        total = 0
        with psycopg.connect(self.dsn, connect_timeout=5) as conn:
            for swept in SWEPT[order.category]:
                where, params = _expired(swept, ms_to_dt(order.cutoff_ms), sorted(order.held_accounts))
                row = conn.execute(f"SELECT count(*) FROM {swept.table} t WHERE {where}", params).fetchone()
                total += int(row[0]) if row else 0
        return total

    def close(self) -> None:
        self.db.close()


def held_rows(conn: psycopg.Connection[Any], account_id: str, subjects: tuple[str, ...]) -> dict[str, list[Any]]:
    """Every row of the store's tables that names the account or one of its subjects, by table."""
    columns: dict[str, list[str]] = {}
    for table, _ in ACCOUNT_TABLES:
        columns.setdefault(table, []).append("account_id")
    for table, column, _ in SUBJECT_TABLES:
        columns.setdefault(table, []).append(column)
    wanted = sorted(set(subjects) | {account_id})
    out = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for table, cols in columns.items():
            where = " OR ".join(f"{c} = ANY(%(ids)s)" for c in cols)
            cur.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY 1", {"ids": wanted})
            out[table] = [jsonable(row) for row in cur.fetchall()]
    return out


def _count_left(conn: psycopg.Connection[Any], orders: list[ErasureOrder], table: str, column: str, category: str,
                found: dict[str, int], *, by_subject: bool) -> None:
    """Add to ``found`` the rows of ``table`` still held for subjects whose order erases ``category``."""
    owner = {subject: o.request_id for o in orders if not o.keeps(category)
             for subject in (o.subjects if by_subject else (o.account_id,)) if subject}
    if owner:
        cur = conn.execute(f"SELECT {column}, count(*) FROM {table} WHERE {column} = ANY(%s) GROUP BY 1",
                           (list(owner),))
        for subject, count in cur.fetchall():
            found[owner[subject]] += int(count)


def _expired(swept: _Swept, cutoff: dt.datetime | None, held: list[str]) -> tuple[str, list[Any]]:
    """Rows past the window at ``cutoff`` (every row the window applies to, if None)."""
    where: list[str] = [f"t.{swept.time_column} < %s"] if cutoff else ["true"]
    params: list[Any] = [cutoff] if cutoff else []
    if held and swept.account_column:
        where.append(f"NOT (t.{swept.account_column} = ANY(%s))")
        params.append(held)
    if swept.keep:
        where.append(swept.keep)
    return " AND ".join(where), params


def _delete_in_batches(conn: psycopg.Connection[Any], swept: _Swept, table: str, cutoff: dt.datetime,
                       held: list[str]) -> int:
    """Delete expired rows BATCH_ROWS at a time, each batch its own short transaction. The rows are
    chosen once, by ctid: checking the window again per deleted row ran consent_history's anti-join
    once per row through an index bloated by lapsed consents (2.5 s a batch in the demo). A row
    changed meanwhile has a new ctid and is left to the next batch."""
    where, params = _expired(swept, cutoff, held)
    total = 0
    while True:
        cur = conn.execute(f"DELETE FROM {table} t WHERE t.ctid = ANY(ARRAY(SELECT t.ctid FROM {table} t "
                           f"WHERE {where} LIMIT {BATCH_ROWS}))", params)
        total += cur.rowcount
        if cur.rowcount < BATCH_ROWS:
            return total


def _expire_months(conn: psycopg.Connection[Any], cutoff: dt.datetime, held: list[str]) -> int:
    """Session-log months that ended before the cutoff are detached CONCURRENTLY (writers of the
    live months are never blocked) and dropped; the month the cutoff falls in, and months where an
    account under legal hold keeps rows, are emptied in batches. A detach or a drop that a crash
    interrupted is finished first."""
    total = 0
    for name, pending in _months(conn):
        lower, upper = _month_bounds(name)
        if lower >= cutoff:
            continue
        keeps = held and conn.execute(f"SELECT 1 FROM {name} WHERE account_id = ANY(%s) LIMIT 1",
                                      (held,)).fetchone()
        if pending:
            conn.execute(f"ALTER TABLE session_logs DETACH PARTITION {name} FINALIZE")
            if keeps:  # a hold came after the interrupted detach: the month goes back
                conn.execute(f"ALTER TABLE session_logs ATTACH PARTITION {name} "
                             f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')")
                pending = False
        if upper > cutoff or keeps:
            total += _delete_in_batches(conn, SWEPT["session_logs"][0], name, cutoff, held)
            continue
        if not pending:
            conn.execute(f"ALTER TABLE session_logs DETACH PARTITION {name} CONCURRENTLY")
        total += _drop_detached(conn, name)
    for (name,) in conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relname LIKE 'session\\_logs\\_p%' AND c.relkind = 'r' "
            "AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)").fetchall():
        total += _drop_detached(conn, name)  # detached before a crash, never dropped
    return total


def _drop_detached(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
    conn.execute(f"DROP TABLE {name}")
    return int(row[0]) if row else 0


def _months(conn: psycopg.Connection[Any]) -> list[tuple[str, bool]]:
    return [(name, bool(pending)) for name, pending in conn.execute(
        "SELECT c.relname, i.inhdetachpending FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'session_logs'::regclass ORDER BY c.relname").fetchall()]


def _month_bounds(name: str) -> tuple[dt.datetime, dt.datetime]:
    year, month = int(name[-6:-2]), int(name[-2:])  # session_logs_pYYYYMM (streams/runtime/schema.sql)
    return (dt.datetime(year, month, 1, tzinfo=dt.UTC),
            dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC))


def _oldest(conn: psycopg.Connection[Any], swept: _Swept, held: list[str]) -> int | None:
    where, params = _expired(swept, None, held)
    row = conn.execute(f"SELECT min(t.{swept.time_column}) FROM {swept.table} t WHERE {where}", params).fetchone()
    return dt_to_ms(row[0]) if row and row[0] is not None else None
