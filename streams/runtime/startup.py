"""What a worker does to its database before anything else: the schema and every component's role,
the configured stores, the journal made to be sent again, the event-time clock resumed, and the hash
keyring checked against the database it was set up with."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import psycopg

from lifecycle.core.clock import Clock
from lifecycle.core.config import Settings
from lifecycle.core.errors import LifecycleError
from lifecycle.core.keys import Keyring, key_file, open_keyring
from lifecycle.core.pgroles import setup_roles
from lifecycle.streams.runtime.database import apply_schema

__all__ = ["prepare_database"]

log = logging.getLogger("lifecycle.worker")


def prepare_database(settings: Settings, clock: Clock,
                     store_grants: Mapping[str, tuple[str, ...]]) -> tuple[Keyring, tuple[str, ...]]:
    """Apply the schema and every component's role, resume the event-time clock, and return the
    hash keyring, refused when it is not the one this database was set up with
    (lifecycle/core/keys.py), with the stores registered by `lifecycle store add` beside the
    configured ones (docs/protocol.md#running-a-store)."""
    if not settings.postgres_dsn:
        raise LifecycleError("the worker needs LIFECYCLE_POSTGRES_DSN")
    apply_schema(settings.postgres_dsn, lambda conn: setup_roles(conn, settings, settings.erasure_stores,
                                                                   store_grants))
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        configured = list(settings.erasure_stores)
        conn.execute("INSERT INTO erasure_stores (store) SELECT unnest(%s::text[]) ON CONFLICT (store) DO UPDATE "
                     "SET active = true", (configured,))
        conn.execute("UPDATE erasure_stores SET active = false WHERE origin = 'config' AND NOT (store = ANY(%s))",
                     (configured,))
        joined = tuple(row[0] for row in conn.execute(
            "SELECT store FROM erasure_stores WHERE active AND NOT (store = ANY(%s)) ORDER BY store", (configured,)))
        # What the journal holds was accepted and not yet applied: the broker this worker meets may
        # not have it (an embedded broker restarted with the stack), so it is sent again; event
        # ids make a second copy harmless.
        conn.execute("UPDATE ingest_journal SET sent_at = NULL WHERE sent_at IS NOT NULL")
        row = conn.execute("SELECT event_time_ms FROM clock_state WHERE id = 1").fetchone()
        if row:
            clock.observe(int(row[0]))
        _move_key_out_of_database(conn, settings)
    return open_keyring(settings), joined


def _move_key_out_of_database(conn: psycopg.Connection[Any], settings: Settings) -> None:
    """Earlier versions kept a generated key in the database it protects; it moves to the key file."""
    row = conn.execute("SELECT value FROM pipeline_secrets WHERE name = 'hash_key'").fetchone()
    if row is None:
        return
    path = key_file(settings)
    if settings.hash_key is None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(bytes(row[0]).hex() + "\n")
        log.info("hash key moved from the database to %s", path)
    conn.execute("DELETE FROM pipeline_secrets WHERE name = 'hash_key'")
