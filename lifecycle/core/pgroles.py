"""Least privilege in PostgreSQL: a login role per component, with grants limited to what it
touches and its own statement and lock timeouts (docs/operations.md#postgresql).

``LIFECYCLE_POSTGRES_DSN`` names the database and the role that owns the schema (the one that
applies it: the worker at start, and the operator's CLI commands). Every other connection logs in
as its component's role, ``<prefix><component>`` (prefix ``LIFECYCLE_POSTGRES_ROLE_PREFIX``,
default ``lifecycle_``, one per database sharing a cluster):

- ``worker``: reads and writes the pipeline's tables in ``public``; nothing of a store's schema.
- ``reader``: the read API (consent, erasure status): SELECT on those tables alone.
- ``front``: `lifecycle front` (HTTP ingestion alone): the ingest journal and the data keys.
- ``store_<name>``: a store's connector: what its Sink class declares (``database_grants``),
  and its own row of ``store_keys`` (row-level security: it registers its public key there), nothing else.

Passwords are generated (32 random bytes, hex) into ``<state>/secrets/postgres-roles/<component>.password``
(``LIFECYCLE_POSTGRES_ROLES_DIR``), mode 0600, by whoever needs one first, and set on the role
by the schema setup. ``LIFECYCLE_POSTGRES_ROLES=false`` runs every component as the DSN's role
(for a database where that role may not create roles).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lifecycle.core.config import Settings
from lifecycle.core.datakeys import DDL as DATA_KEYS_DDL
from lifecycle.core.errors import ConfigError
from lifecycle.core.keys import HASH_KEYS_DDL, create_key_file
from lifecycle.core.storekeys import ensure_table as ensure_store_keys_table

__all__ = ["role_name", "component_dsn", "as_component", "setup_roles", "roles_dir", "init_passwords",
           "SESSION_LOGS_OWNER"]

SESSION_LOGS_OWNER = "session_logs_owner"  # NOLOGIN: owns session_logs and its month partitions
DEDUPE_OWNER = "processed_events_owner"  # NOLOGIN: owns processed_events and its day partitions
# (owner, partitioned table, other tables it owns when they exist, the SECURITY DEFINER functions
# that make and drop its partitions)
_PARTITIONED = (
    (SESSION_LOGS_OWNER, "session_logs", (), ("session_logs_partition(timestamptz)",)),
    (DEDUPE_OWNER, "processed_events", ("processed_events_before", "processed_events_unbounded", "processed_events_v1"),
     ("processed_events_partition(date, date)", "processed_events_drop_before(date, timestamptz)")),
)
# Per component: statement_timeout, lock_timeout. A read answers in seconds or not at all.
_TIMEOUTS = {"worker": ("60s", "10s"), "reader": ("10s", "5s"), "front": ("30s", "10s")}
_STORE_TIMEOUTS = ("60s", "10s")
_WORKER = (
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}",
    # Tables the schema's owner creates later (the key tables, made on first use) too.
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role}",
)
_READER = (
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT ON consent_current, consent_history, newsletter, erasure_requests, erasure_progress TO {role}",
    # The console (lifecycle/console/): the erasure record, the stores, the certificates, and of the
    # access requests their timing alone (not the account id, the answer key or the archive).
    "GRANT SELECT ON erasure_proofs, erasure_stores, erasure_certificates, erasure_replays, access_progress, "
    "request_extensions TO {role}",
    "GRANT SELECT (request_id, account_hash, opened_at, deadline, state, completed_at, expires_at) "
    "ON access_requests TO {role}",
)

# `lifecycle front` (streams/http/front.py): writes the ingest journal and seals; reads the key
# checks and the event clock (a data key's day of use). It deletes nothing and reads no event applied.
_FRONT = (
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT, UPDATE ON ingest_journal, data_keys TO {role}",
    "GRANT SELECT ON master_key_check, clock_state, hash_keys TO {role}",
)


def role_name(settings: Settings, component: str) -> str:
    """``worker``, ``reader`` or ``store-<name>`` as a role name: the prefix, then the component
    with every character outside [a-z0-9] turned into ``_``."""
    return settings.postgres_role_prefix + re.sub(r"[^a-z0-9]", "_", component.lower())


def roles_dir(settings: Settings) -> Path:
    return settings.postgres_roles_dir or settings.state_dir / "secrets" / "postgres-roles"


def _password(settings: Settings, component: str, *, create: bool) -> str:
    path = roles_dir(settings) / f"{component}.password"
    if not path.exists():
        if not create:
            raise ConfigError(f"no PostgreSQL password for {component} at {path}: start the worker once (it "
                              "creates the roles), or set LIFECYCLE_POSTGRES_ROLES_DIR")
        create_key_file(path, secrets.token_hex(32).encode(), encode=False)
    return path.read_text().strip()


def init_passwords(settings: Settings, stores: Iterable[str]) -> Path | None:
    """Generate every component's password file that does not exist yet (`lifecycle keys init`,
    for deployments whose processes mount the secrets read-only); the folder, or None when roles
    are off."""
    if not settings.postgres_roles:
        return None
    for component in ("worker", "reader", "front", *(f"store-{s}" for s in stores)):
        _password(settings, component, create=True)
    return roles_dir(settings)


def component_dsn(settings: Settings, component: str) -> str:
    """The DSN a component connects with: the DSN's host and database, its own role."""
    from psycopg.conninfo import make_conninfo

    dsn = settings.postgres_dsn or ""
    if not settings.postgres_roles or not dsn:
        return dsn
    return make_conninfo(dsn, user=role_name(settings, component), password=_password(settings, component,
                                                                                          create=False))


def _own_partitioned(conn: Any, owner: str, table: str, others: tuple[str, ...], functions: tuple[str, ...]) -> None:
    """``owner`` (no login) owns ``table``, its partitions and the functions that make and drop them:
    the worker makes partitions through those functions alone, without CREATE on the schema."""
    from psycopg import sql

    _create(conn, owner, login=False, password=None)
    conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(owner)))
    found = conn.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND (c.relname = %s "
        "OR c.relname = ANY(%s) OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass))",
        (table, list(others), table)).fetchall()
    for (name,) in found:
        conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(owner)))
    for function in functions:
        conn.execute(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(sql.SQL(function), sql.Identifier(owner)))


def as_component(settings: Settings, component: str) -> Settings:
    """These settings with the component's DSN."""
    return dataclasses.replace(settings, postgres_dsn=component_dsn(settings, component) or None)


def setup_roles(conn: Any, settings: Settings, stores: Iterable[str],
                store_grants: Mapping[str, tuple[str, ...]]) -> None:
    """Create or update every component's role, its password, timeouts and grants (``conn``: sync
    psycopg in autocommit, as the schema's owner, after the schema). ``store_grants``: the
    statements a shipped store needs, by store name (``{role}`` and ``{owner}`` stand for its
    role and the session-log owner); a store not shipped here gets its key row alone."""
    if not settings.postgres_roles:
        return
    from psycopg import sql

    def run(template: str, role: str) -> None:
        owner = sql.Identifier(role_name(settings, SESSION_LOGS_OWNER))
        conn.execute(sql.SQL(template).format(role=sql.Identifier(role), owner=owner))

    for owner_name, table, others, functions in _PARTITIONED:
        _own_partitioned(conn, role_name(settings, owner_name), table, others, functions)

    conn.execute(DATA_KEYS_DDL)  # the front's grants name them: made here if no process has made them yet
    conn.execute(HASH_KEYS_DDL)
    components = {"worker": _WORKER, "reader": _READER, "front": _FRONT}
    components.update({f"store-{s}": store_grants.get(s, ()) for s in stores})
    for component, grants in components.items():
        role = role_name(settings, component)
        _create(conn, role, login=True, password=_password(settings, component, create=True))
        statement, lock = _TIMEOUTS.get(component, _STORE_TIMEOUTS)
        for name, value in (("statement_timeout", statement), ("lock_timeout", lock),
                            ("idle_in_transaction_session_timeout", "5min")):
            conn.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(sql.Identifier(role), sql.Identifier(name),
                                                                     sql.Literal(value)))
        for template in grants:
            run(template, role)

    # A store reads its own ack key and no other (the worker reads and writes them all).
    worker = sql.Identifier(role_name(settings, "worker"))
    ensure_store_keys_table(conn)
    conn.execute(HASH_KEYS_DDL)
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON store_keys TO {}").format(worker))
    conn.execute("ALTER TABLE store_keys ENABLE ROW LEVEL SECURITY")
    conn.execute("DROP POLICY IF EXISTS worker_all ON store_keys")
    conn.execute(sql.SQL("CREATE POLICY worker_all ON store_keys TO {} USING (true) WITH CHECK (true)").format(worker))
    for store in stores:
        role = role_name(settings, f"store-{store}")
        policy = sql.Identifier(f"own_key_{role}")
        # Its own row, to register its public key at its first start (lifecycle/core/storekeys.py).
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON store_keys TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON hash_keys TO {}").format(sql.Identifier(role)))  # fingerprints
        conn.execute(sql.SQL("DROP POLICY IF EXISTS {} ON store_keys").format(policy))
        conn.execute(sql.SQL("CREATE POLICY {} ON store_keys TO {} USING (store = {}) WITH CHECK (store = {})").format(
            policy, sql.Identifier(role), sql.Literal(store), sql.Literal(store)))


def _create(conn: Any, role: str, *, login: bool, password: str | None) -> None:
    from psycopg import errors, sql

    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
        try:
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        except errors.DuplicateObject:
            pass  # another database's setup of the same prefix won the race
        except errors.InsufficientPrivilege:
            raise ConfigError("the role of LIFECYCLE_POSTGRES_DSN may not create roles: grant it CREATEROLE (and "
                              "ownership of the schema), or set LIFECYCLE_POSTGRES_ROLES=false to run every "
                              "component as that role") from None
    conn.execute(sql.SQL("ALTER ROLE {} WITH {} PASSWORD {}").format(
        sql.Identifier(role), sql.SQL("LOGIN" if login else "NOLOGIN"),
        sql.Literal(password) if password is not None else sql.SQL("NULL")))
