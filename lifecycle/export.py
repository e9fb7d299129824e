"""`lifecycle export ACCOUNT`: everything the pipeline holds about one account, as JSON.

The policy promises users their data is used "to provide services ... and maintain your accounts";
an export lets the privacy contact answer an access request with what the stores actually hold:
the pipeline's PostgreSQL tables (profile, sessions and their files, failed logins, consent
history and current consent, newsletter, linked visitor ids) and the files store's folder.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

__all__ = ["export_account"]

_BY_ACCOUNT = {
    "profile": "SELECT * FROM accounts WHERE account_id = %s",
    "session_logs": "SELECT * FROM session_logs WHERE account_id = %s ORDER BY started_at",
    "open_sessions": "SELECT * FROM open_sessions WHERE account_id = %s ORDER BY started_at",
    "failed_logins": "SELECT * FROM failed_logins WHERE account_id = %s ORDER BY occurred_at",
    "linked_visitors": "SELECT visitor_id FROM account_visitors WHERE account_id = %s ORDER BY 1",
}
_BY_SUBJECT = {
    "consent_history": "SELECT * FROM consent_history WHERE subject_id = ANY(%s) ORDER BY occurred_at",
    "consent_current": "SELECT * FROM consent_current WHERE subject_id = ANY(%s) ORDER BY subject_id, purpose",
    "newsletter": "SELECT * FROM newsletter WHERE subject_id = ANY(%s)",
}


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def export_account(dsn: str, files_root: Path, account_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {"account_id": account_id}
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        for name, sql in _BY_ACCOUNT.items():
            out[name] = [_plain(row) for row in conn.execute(sql, (account_id,)).fetchall()]
        subjects = [account_id] + [row["visitor_id"] for row in out["linked_visitors"]]
        for name, sql in _BY_SUBJECT.items():
            out[name] = [_plain(row) for row in conn.execute(sql, (subjects,)).fetchall()]
    folder = files_root / account_id
    out["files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) \
        if folder.is_dir() and "/" not in account_id else []
    return out
