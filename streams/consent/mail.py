"""Who may be mailed, and what.

Marketing mail (newsletters, offers, tips) goes only to the `marketing_audience` view: subscribed,
verified address, account neither restricted nor closing. Transactional mail ("notifications,
confirmation emails, and customer service updates as necessary to provide you with the service")
is never blocked by the newsletter choice or by restriction: it needs only a known account with
an address.
"""

from __future__ import annotations

from typing import Any, Literal

import psycopg

__all__ = ["may_send", "MailKind"]

MailKind = Literal["marketing", "transactional"]


def may_send(conn: psycopg.Connection[Any], account_id: str, kind: MailKind) -> bool:
    if kind == "marketing":
        row = conn.execute("SELECT 1 FROM marketing_audience WHERE account_id = %s", (account_id,)).fetchone()
    elif kind == "transactional":
        row = conn.execute(
            "SELECT 1 FROM accounts WHERE account_id = %s AND email IS NOT NULL", (account_id,)
        ).fetchone()
    else:
        raise ValueError("kind must be 'marketing' or 'transactional'")
    return row is not None
