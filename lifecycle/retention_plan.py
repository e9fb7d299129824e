"""`lifecycle retention plan`: what a sweep would erase at a given time, store by store, with
nothing erased. Asks each store's connector code (``plan``) with the same order the engine
would issue, so the plan and the sweep cannot disagree on what is expired."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import psycopg

from lifecycle.connectors.base.sink import RetentionOrder, RetentionSink, TransientStoreError
from lifecycle.connectors.stores import make_sink
from lifecycle.core.config import Settings
from lifecycle.core.errors import ConfigError, LifecycleError
from lifecycle.core.policy import load_policy
from lifecycle.core.timeutil import dt_to_ms, ms_to_dt
from lifecycle.topics import load_spec

__all__ = ["plan_lines", "parse_time"]


def parse_time(text: str) -> int:
    """Epoch milliseconds, or an RFC 3339 / ISO 8601 time (UTC when no offset is given)."""
    if text.isdigit():
        return int(text)
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--at {text!r}: expected epoch milliseconds or an ISO 8601 time") from None
    return dt_to_ms(value if value.tzinfo else value.replace(tzinfo=dt.UTC))


def _pipeline_now(settings: Settings) -> int:
    if settings.clock == "event" and settings.postgres_dsn:
        with psycopg.connect(settings.postgres_dsn, connect_timeout=5) as conn:
            row = conn.execute("SELECT event_time_ms FROM clock_state WHERE id = 1").fetchone()
            if row:
                return int(row[0])
    return dt_to_ms(dt.datetime.now(dt.UTC))


def plan_lines(settings: Settings, at_ms: int | None, out: Callable[[str], None]) -> None:
    if not settings.postgres_dsn:
        raise LifecycleError("`lifecycle retention plan` needs LIFECYCLE_POSTGRES_DSN")
    policy = load_policy(settings.retention_policy)
    now = at_ms if at_ms is not None else _pipeline_now(settings)
    with psycopg.connect(settings.postgres_dsn, connect_timeout=5) as conn:
        holds = frozenset(r[0] for r in conn.execute("SELECT account_id FROM legal_holds").fetchall())
    topics: dict[str, list[str]] = {}
    for spec in load_spec(settings.topic_spec):
        if spec.retention:
            topics.setdefault(spec.retention, []).append(spec.name)
    sinks = []
    for store in settings.erasure_stores:
        try:
            # The operator's plan reads with the DSN's own role (it erases nothing).
            sinks.append(make_sink(store, dataclasses.replace(settings, postgres_roles=False)))
        except ConfigError as exc:
            out(f"store {store}: skipped ({exc})")
    out(f"retention plan at {ms_to_dt(now).isoformat()} ({policy.path}); nothing is erased")
    try:
        for category in policy.categories.values():
            starts = category.starts.replace("_", " ")
            head = f"{category.name}: {category.window} from {starts}, then {category.action}"
            if not category.swept:
                out(f"{head} (with the account's erasure)")
                continue
            cutoff = category.window.cutoff(now)
            out(f"{head}; cutoff {ms_to_dt(cutoff).isoformat()}")
            order = RetentionOrder("plan", category.name, cutoff, category.action,
                                   holds if category.legal_hold else frozenset())
            for sink in sinks:
                if not isinstance(sink, RetentionSink) or category.name not in sink.retention_categories:
                    continue
                try:
                    count = sink.plan(order)
                except TransientStoreError as exc:
                    out(f"  {sink.name}: unreachable ({exc})")
                    continue
                held = f" ({len(order.held_accounts)} account(s) on legal hold kept)" if order.held_accounts else ""
                out(f"  {sink.name}: {count} item(s) would be erased{held}")
            for name in topics.get(category.name, []):
                out(f"  kafka {settings.topic(name)}: the broker drops segments past the window")
    finally:
        for sink in sinks:
            sink.close()
