"""The mailing list: the newsletter audience as the mailing service sees it.

It keeps its own projection, ``mailing.list_members`` (account id, address), synchronised from
the pipeline's ``marketing_audience`` view (subscribed, verified, not restricted, not closing),
so an unsubscription or a restriction leaves the list at the next sync. Erasing deletes the
account's member row with a receipt in the same transaction: removing the address also stops
marketing mail.
"""

from __future__ import annotations

from psycopg.rows import dict_row

from lifecycle.connectors.base.pg import SinkConnection
from lifecycle.connectors.base.sink import (
    AccessOrder,
    AckStatus,
    ErasureOrder,
    HeldData,
    Outcome,
    Sink,
    jsonable,
    required,
)
from lifecycle.core.config import Settings
from lifecycle.core.pgroles import component_dsn

__all__ = ["MailingListSink"]

_SCHEMA = """
SELECT pg_advisory_xact_lock(7400002);
DO $$ BEGIN  -- even IF NOT EXISTS needs CREATE on the database, which the store's role lacks
    IF to_regnamespace('mailing') IS NULL THEN CREATE SCHEMA mailing; END IF;
END $$;
CREATE TABLE IF NOT EXISTS mailing.list_members (
    account_id text PRIMARY KEY, email text NOT NULL, added_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS mailing.receipts (
    request_id uuid PRIMARY KEY, status text NOT NULL, items bigint NOT NULL);
"""
_SYNC = """
WITH gone AS (
    DELETE FROM mailing.list_members m
    WHERE NOT EXISTS (SELECT 1 FROM marketing_audience a WHERE a.account_id = m.account_id AND a.email = m.email)
    RETURNING 1
), added AS (
    INSERT INTO mailing.list_members (account_id, email)
    SELECT account_id, email FROM marketing_audience WHERE email IS NOT NULL
    ON CONFLICT (account_id) DO UPDATE SET email = EXCLUDED.email RETURNING 1
)
SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM gone)
"""


class MailingListSink(Sink):
    """Delivery: at-least-once orders, exactly-once in effect (receipts in the same transaction)."""

    name = "mailing-list"
    holds = ("newsletter_audience",)
    database_grants = (
        "CREATE SCHEMA IF NOT EXISTS mailing AUTHORIZATION {role}",
        "ALTER SCHEMA mailing OWNER TO {role}",
        "ALTER TABLE IF EXISTS mailing.list_members OWNER TO {role}",
        "ALTER TABLE IF EXISTS mailing.receipts OWNER TO {role}",
        "GRANT USAGE ON SCHEMA public TO {role}",
        "GRANT SELECT ON marketing_audience TO {role}",
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> MailingListSink:
        required(settings.postgres_dsn, "LIFECYCLE_POSTGRES_DSN")
        return cls(component_dsn(settings, "store-mailing-list"))

    def __init__(self, dsn: str):
        self.db = SinkConnection(dsn, _SCHEMA, "mailing list database")

    def sync(self) -> tuple[int, int]:
        """Bring the list in line with the marketing audience; (upserted, removed)."""
        with self.db.transaction() as conn:
            row = conn.execute(_SYNC).fetchone()
            return (int(row[0]), int(row[1])) if row else (0, 0)

    def tick(self) -> None:
        self.sync()  # the list follows the audience between batches

    def erase(self, orders: list[ErasureOrder]) -> dict[str, Outcome]:
        with self.db.transaction() as conn:
            request_of = {o.receipt_id: o.request_id for o in orders}
            cur = conn.execute("SELECT request_id::text, status, items FROM mailing.receipts "
                               "WHERE request_id = ANY(%s::uuid[])", (list(request_of),))
            done = {request_of[rid]: Outcome(AckStatus(status), items) for rid, status, items in cur.fetchall()}
            todo = [o for o in orders if o.request_id not in done]
            owner = {s: o.request_id for o in todo for s in o.subjects}
            counts = {o.request_id: 0 for o in todo}
            if todo:
                cur = conn.execute("DELETE FROM mailing.list_members WHERE account_id = ANY(%s) "
                                   "RETURNING account_id", (list(owner),))
                for (account,) in cur.fetchall():
                    counts[owner[account]] += 1
            outcomes = {rid: Outcome(AckStatus.ERASED if n else AckStatus.NOTHING_FOUND, n)
                        for rid, n in counts.items()}
            with conn.cursor() as c:
                c.executemany("INSERT INTO mailing.receipts VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                              [(o.receipt_id, outcomes[o.request_id].status, outcomes[o.request_id].items)
                               for o in todo])
            return {**done, **outcomes}

    def verify(self, orders: list[ErasureOrder]) -> dict[str, int]:
        owner = {s: o.request_id for o in orders for s in o.subjects}
        found = {o.request_id: 0 for o in orders}
        with self.db.transaction() as conn:
            cur = conn.execute("SELECT account_id FROM mailing.list_members WHERE account_id = ANY(%s)", (list(owner),))
            for (account,) in cur.fetchall():
                found[owner[account]] += 1
        return found

    def export(self, orders: list[AccessOrder]) -> dict[str, HeldData]:
        out = {}
        with self.db.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
            for order in orders:
                cur.execute("SELECT * FROM mailing.list_members WHERE account_id = ANY(%s) ORDER BY 1",
                            (list(order.subjects),))
                rows = [jsonable(row) for row in cur.fetchall()]
                out[order.request_id] = HeldData({"list_members": rows}, len(rows))
        return out

    def subject_ids(self) -> list[str]:
        with self.db.transaction() as conn:
            return [row[0] for row in conn.execute("SELECT account_id FROM mailing.list_members").fetchall()]

    def close(self) -> None:
        self.db.close()
