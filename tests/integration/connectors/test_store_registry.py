"""A store that joined with `lifecycle store add` stays joined across a worker's start (which turns
off only the configured stores no longer configured) until `store remove`; erasures opened while
it is joined wait for it, and keep waiting after it leaves."""

from __future__ import annotations

import psycopg
import pytest

from lifecycle.core.clock import make_clock
from lifecycle.core.errors import ConfigError
from lifecycle.store_registry import join, leave, listing
from lifecycle.streams.runtime.startup import prepare_database


def test_a_joined_store_outlives_a_worker_start_until_it_leaves(settings):
    dsn = settings.postgres_dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert join(dsn, conn, "acme-crm")  # before any worker: the schema is applied for it
        assert not join(dsn, conn, "acme-crm")
        assert not join(dsn, conn, "postgres")  # a shipped store joins by configuration only
    _, joined = prepare_database(settings, make_clock("event"), {})
    assert joined == ("acme-crm",)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = {r.store: r for r in listing(conn)}
        assert rows["acme-crm"].waited_for and not rows["acme-crm"].shipped
        assert rows["postgres"].origin == "config" and rows["postgres"].waited_for
        with pytest.raises(ConfigError, match="LIFECYCLE_ERASURE_STORES"):
            leave(conn, "postgres")
        with pytest.raises(ConfigError, match="not a store"):
            leave(conn, "nobody")
        assert leave(conn, "acme-crm") == 0
    _, joined = prepare_database(settings, make_clock("event"), {})
    assert joined == ()
    with psycopg.connect(dsn, autocommit=True) as conn:
        active = [r[0] for r in conn.execute("SELECT store FROM erasure_stores WHERE active ORDER BY 1")]
    assert active == sorted(settings.erasure_stores)
