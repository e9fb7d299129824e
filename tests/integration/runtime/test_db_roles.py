"""Least privilege in PostgreSQL (issue 18): each component logs in as its own role, which reads
and writes what it needs and nothing else; the timeouts are the role's."""

from __future__ import annotations

import stat

import psycopg
import pytest

from lifecycle.core.pgroles import component_dsn, role_name, roles_dir
from tests.helpers import wait_for

# (component, statement, allowed): what each role may and may not do.
CASES = [
    ("store-mailing-list", "SELECT count(*) FROM accounts", False),
    ("store-mailing-list", "SELECT count(*) FROM erasure_receipts", False),
    ("store-mailing-list", "SELECT count(*) FROM ingest_journal", False),
    ("store-mailing-list", "SELECT count(*) FROM marketing_audience", True),
    ("store-mailing-list", "SELECT count(*) FROM mailing.list_members", True),
    ("store-postgres", "SELECT count(*) FROM mailing.list_members", False),
    ("store-postgres", "SELECT count(*) FROM data_keys", False),
    ("store-postgres", "SELECT count(*) FROM erasure_proofs", False),
    ("store-postgres", "SELECT count(*) FROM ingest_journal", False),
    ("store-postgres", "INSERT INTO accounts (account_id) VALUES ('x')", False),
    ("store-postgres", "SELECT count(*) FROM failed_logins", True),
    ("store-redis", "SELECT count(*) FROM accounts", False),
    ("store-files", "SELECT count(*) FROM mailing.list_members", False),
    ("reader", "SELECT count(*) FROM accounts", False),
    ("reader", "SELECT count(*) FROM data_keys", False),
    ("reader", "DELETE FROM consent_current", False),
    ("reader", "SELECT count(*) FROM consent_current", True),
    ("front", "SELECT count(*) FROM ingest_journal", True),
    ("front", "SELECT count(*) FROM data_keys", True),
    ("front", "DELETE FROM ingest_journal", False),
    ("front", "SELECT count(*) FROM session_logs", False),
    ("front", "SELECT count(*) FROM accounts", False),
    ("front", "SELECT count(*) FROM erasure_requests", False),
    ("front", "CREATE TABLE front_made (x int)", False),
    ("worker", "SELECT count(*) FROM mailing.list_members", False),
    ("worker", "SELECT count(*) FROM erasure_requests", True),
]


def _run(settings, component, statement):
    with psycopg.connect(component_dsn(settings, component), connect_timeout=10) as conn:
        conn.execute(statement)


def test_each_component_touches_only_what_it_needs(settings, worker, connectors):
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as admin:
        wait_for(lambda: admin.execute("SELECT to_regclass('mailing.list_members')").fetchone()[0],
                 what="the mailing list's table")
        # Each connector registers its public key at its first start, after the worker is ready;
        # the fixture does not wait for that (CI saw the redis store's row missing once).
        wait_for(lambda: {r[0] for r in admin.execute(
            "SELECT store FROM store_keys WHERE public_key IS NOT NULL").fetchall()} >= set(settings.erasure_stores),
                 what="every store's public key")
    refused = []
    for component, statement, allowed in CASES:
        try:
            _run(settings, component, statement)
            if not allowed:
                refused.append(f"{component} may: {statement}")
        except psycopg.errors.InsufficientPrivilege:
            if allowed:
                refused.append(f"{component} may not: {statement}")
    assert refused == []

    # Each store reads its own ack key, no other.
    for store in settings.erasure_stores:
        with psycopg.connect(component_dsn(settings, f"store-{store}")) as conn:
            assert [r[0] for r in conn.execute("SELECT store FROM store_keys").fetchall()] == [store]

    # The timeouts are the role's, whoever opens the connection.
    for component, expected in (("reader", "10s"), ("worker", "1min"), ("store-postgres", "1min")):
        with psycopg.connect(component_dsn(settings, component)) as conn:
            assert conn.execute("SHOW statement_timeout").fetchone()[0] == expected

    # The passwords: one file per component, 0600; a wrong one does not log in.
    for path in roles_dir(settings).iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(component_dsn(settings, "reader").replace("password=", "password=x"), connect_timeout=10)

    # Nothing of the running worker and connectors uses the schema owner's role.
    with psycopg.connect(settings.postgres_dsn) as admin:
        users = {r[0] for r in admin.execute(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()").fetchall()}
    components = {role_name(settings, c) for c in ("worker", "reader")} | {
        role_name(settings, f"store-{s}") for s in settings.erasure_stores}
    assert users and users <= components, users
