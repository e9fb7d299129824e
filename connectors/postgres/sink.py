"""The pipeline's own PostgreSQL tables as a downstream store.

Delivery: at-least-once orders, exactly-once in effect. Every order of a batch is erased in ONE
transaction with set-based deletes (``= ANY(%s)`` over all the batch's identifiers), and a
receipt per request is written in that same transaction, so a redelivered order reports the
count of its first run.
"""

from __future__ import annotations

from connectors.base.pg import SinkConnection
from connectors.base.sink import ErasureOrder, Outcome

__all__ = ["PostgresSink", "ACCOUNT_TABLES", "SUBJECT_TABLES"]

# Every table the pipeline writes that can hold an account's data, by the column naming it.
ACCOUNT_TABLES = ("accounts", "open_sessions", "session_files", "session_logs", "failed_logins",
                  "account_visitors")
SUBJECT_TABLES = (("consent_history", "subject_id"), ("consent_current", "subject_id"),
                  ("newsletter", "subject_id"), ("traffic_pending", "visitor_id"),
                  ("traffic_pending", "account_id"))
_RECEIPTS = """
CREATE TABLE IF NOT EXISTS erasure_receipts (
    request_id uuid NOT NULL, store text NOT NULL, status text NOT NULL, items bigint NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (request_id, store))
"""


class PostgresSink:
    name = "postgres"

    def __init__(self, dsn: str):
        self.db = SinkConnection(dsn, _RECEIPTS, "postgres")

    def erase(self, orders: list[ErasureOrder]) -> dict[str, Outcome]:
        with self.db.transaction() as conn:
            cur = conn.execute("SELECT request_id::text, status, items FROM erasure_receipts "
                               "WHERE store = %s AND request_id = ANY(%s::uuid[])",
                               (self.name, [o.request_id for o in orders]))
            done = {rid: Outcome(status, items) for rid, status, items in cur.fetchall()}
            todo = [o for o in orders if o.request_id not in done]
            if not todo:
                return done
            by_subject: dict[str, str] = {}
            for order in todo:
                for subject in order.subjects:
                    by_subject[subject] = order.request_id
            accounts = [o.account_id for o in todo]
            counts: dict[str, int] = {o.request_id: 0 for o in todo}
            owner = {o.account_id: o.request_id for o in todo}
            for table in ACCOUNT_TABLES:
                cur = conn.execute(f"DELETE FROM {table} WHERE account_id = ANY(%s) RETURNING account_id",
                                   (accounts,))
                for (account,) in cur.fetchall():
                    counts[owner[account]] += 1
            for table, column in SUBJECT_TABLES:
                cur = conn.execute(f"DELETE FROM {table} WHERE {column} = ANY(%s) RETURNING {column}",
                                   (list(by_subject),))
                for (subject,) in cur.fetchall():
                    counts[by_subject[subject]] += 1
            outcomes = {rid: Outcome("erased" if n else "nothing_found", n) for rid, n in counts.items()}
            with conn.cursor() as c:
                c.executemany("INSERT INTO erasure_receipts (request_id, store, status, items) "
                              "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                              [(rid, self.name, o.status, o.items) for rid, o in outcomes.items()])
            return {**done, **outcomes}

    def close(self) -> None:
        self.db.close()
