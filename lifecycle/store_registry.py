"""Which stores every new erasure waits for: the shipped ones named in LIFECYCLE_ERASURE_STORES,
and the stores of other teams that joined with `lifecycle store add` (docs/protocol.md, "Running
a store"). `up` starts connectors for the shipped ones only; a store of another team runs where
its owner runs it, and the pipeline waits for its answers.

Joining is a row in ``erasure_stores`` with origin 'registered'; a worker's start leaves such rows
alone (it turns off only configured stores no longer configured), and new erasures read the table,
so a store that joins while the worker runs is waited for from its next erasure on."""

from __future__ import annotations

import dataclasses
from typing import Any

from lifecycle.connectors.stores import STORES
from lifecycle.core.errors import ConfigError
from lifecycle.core.storekeys import check_store_name, ensure_table
from lifecycle.streams.runtime.database import apply_schema

__all__ = ["shipped", "join", "leave", "declare_backups", "StoreRow", "listing"]


def shipped(store: str) -> bool:
    """A store this project ships a connector for (`lifecycle connector NAME`)."""
    return store in STORES


def join(dsn: str, conn: Any, store: str) -> bool:
    """Make every erasure opened from now on wait for ``store`` (a store not shipped here). True
    when it was not waited for before. The schema is applied first: `store add` may come before
    any worker has started."""
    check_store_name(store)
    if shipped(store):
        return False
    apply_schema(dsn)
    before = conn.execute("SELECT active FROM erasure_stores WHERE store = %s", (store,)).fetchone()
    conn.execute("INSERT INTO erasure_stores (store, origin) VALUES (%s, 'registered') ON CONFLICT (store) DO "
                 "UPDATE SET active = true, origin = 'registered'", (store,))
    return before is None or not before[0]


def leave(conn: Any, store: str) -> int:
    """Erasures opened from now on stop waiting for ``store``; returns how many open ones still
    wait for it (they keep waiting: no certificate claims an erasure a store never confirmed)."""
    row = conn.execute("SELECT origin FROM erasure_stores WHERE store = %s", (store,)).fetchone() \
        if _has_registry(conn) else None
    if row is None:
        raise ConfigError(f"{store!r} is not a store the pipeline knows (`lifecycle store list`)")
    if row[0] != "registered":
        raise ConfigError(f"{store!r} is named in LIFECYCLE_ERASURE_STORES: take it out there (and restart the "
                          "worker); `store remove` is for stores that joined with `store add`")
    conn.execute("UPDATE erasure_stores SET active = false WHERE store = %s", (store,))
    return int(conn.execute("SELECT count(*) FROM erasure_progress WHERE store = %s AND status = 'pending'",
                            (store,)).fetchone()[0])


def declare_backups(dsn: str, conn: Any, store: str, days: int) -> None:
    """Record how long ``store`` keeps its backups, as its owner declares it (0: it keeps none);
    certificates of erasure state by when every backup that may hold the subject expires."""
    if not 0 <= days <= 3650:
        raise ConfigError("--days: 0 (no backups) to 3650")
    apply_schema(dsn)
    found = conn.execute("UPDATE erasure_stores SET backup_days = %s WHERE store = %s RETURNING 1",
                         (days, check_store_name(store))).fetchone()
    if found is None:
        raise ConfigError(f"{store!r} is not a store the pipeline knows (`lifecycle store list`)")


@dataclasses.dataclass(frozen=True)
class StoreRow:
    store: str
    shipped: bool
    origin: str  # config, registered, or key (a key and nothing else: not waited for)
    waited_for: bool
    signing_key: bool
    pending: int  # erasure orders it has not answered yet
    last_answer: str | None  # RFC 3339, the latest acknowledgement it sent
    backup_days: int | None  # as its owner declared it; None: not declared


def listing(conn: Any) -> list[StoreRow]:
    """Every store the pipeline knows, by name: in the registry, or holding a key."""
    ensure_table(conn)
    if not _has_registry(conn):
        registry: dict[str, tuple[str, bool, int | None]] = {}
        progress: dict[str, tuple[int, Any]] = {}
    else:
        registry = {s: (o, a, b) for s, o, a, b in conn.execute(
            "SELECT store, origin, active, backup_days FROM erasure_stores")}
        progress = {s: (int(p), last) for s, p, last in conn.execute(
            "SELECT store, count(*) FILTER (WHERE status = 'pending'), max(acknowledged_at) "
            "FROM erasure_progress GROUP BY store")}
    keys = {s: public is not None for s, public in conn.execute("SELECT store, public_key FROM store_keys")}
    rows = []
    for store in sorted(set(registry) | set(keys)):
        origin, active, backup_days = registry.get(store, ("key", False, None))
        pending, last = progress.get(store, (0, None))
        rows.append(StoreRow(store, shipped(store), origin, active, keys.get(store, False), pending,
                             last.isoformat() if last is not None else None, backup_days))
    return rows


def _has_registry(conn: Any) -> bool:
    return conn.execute("SELECT to_regclass('erasure_stores')").fetchone()[0] is not None
