"""PostgreSQL access for the processors: the schema, connections, and retry of transient errors.

Errors are told apart by SQLSTATE, never by message: only a lost connection (class 08, or no
answer at all), a server shutting down or refusing connections (57P01-57P03, 53300), a
serialization failure (40001) and a deadlock (40P01) are retried, with lifecycle/core/backoff.py.
Everything else (a statement timeout, a full disk, bad data) is raised at once: the caller isolates
the record or fails loudly. Logs name the error class and SQLSTATE only: PostgreSQL's DETAIL text
can quote row values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from lifecycle.core.backoff import Backoff
from lifecycle.core.errors import is_transient

__all__ = ["SCHEMA_SQL", "apply_schema", "connect", "with_retry", "is_transient"]

log = logging.getLogger("lifecycle.db")
SCHEMA_SQL = (Path(__file__).with_name("schema.sql")).read_text()
T = TypeVar("T")


# schema.sql alters tables a running worker writes (ADD COLUMN IF NOT EXISTS takes the table's
# exclusive lock even when the column is there): a worker starting beside a busy one waited for
# the other's batch while holding locks that batch needed next, and PostgreSQL killed the start as
# a deadlock (seen when a second worker started under load). So the schema gives up a lock it
# cannot get within a second, which also bounds how long it holds up the running worker's writes,
# and is applied again from the top: it is one transaction, and idempotent.
SCHEMA_LOCK_TIMEOUT_MS = 1_000
SCHEMA_DEADLINE_S = 120.0


def apply_schema(dsn: str, then: Callable[[psycopg.Connection[Any]], None] | None = None,
                 deadline_s: float = SCHEMA_DEADLINE_S) -> None:
    """Apply schema.sql, then ``then`` (the roles and grants), under one lock: workers starting
    together take turns. A transient failure (a lock not granted in time, a deadlock with a running
    worker, a lost connection) is tried again until ``deadline_s``."""
    backoff = Backoff(first_s=0.2, max_s=3.0, deadline_s=deadline_s)
    while True:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute("SELECT pg_advisory_lock(7400001)")
                try:
                    conn.execute(f"SET lock_timeout = {SCHEMA_LOCK_TIMEOUT_MS}")
                    conn.execute(SCHEMA_SQL)
                    if then is not None:
                        then(conn)
                finally:
                    conn.execute("SELECT pg_advisory_unlock(7400001)")
            return
        except psycopg.Error as exc:
            if not is_transient(exc):
                raise
            delay = backoff.next_delay()  # raises RetryDeadline once the deadline has passed
            log.warning("schema not applied (%s): trying again in %.1f s", describe(exc), delay)
            time.sleep(delay)


# Every statement of the pipeline is short: one that runs longer is cancelled (57014, not
# transient: its batch is retried event by event and the event that still fails is dead-lettered),
# and a lock not granted in time (55P03) is given up and tried again later.
STATEMENT_TIMEOUT_MS = 60_000
LOCK_TIMEOUT_MS = 10_000


async def connect(dsn: str, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
                  lock_timeout_ms: int = LOCK_TIMEOUT_MS) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=False, connect_timeout=5)
    # Every statement planned for the tables as they are now: a plan cached while the erasure tables
    # were small (the foreign-key check of erasure_progress, the acks' prepared updates) kept
    # scanning them whole once a burst of closures had grown them, and the burst went quadratic.
    # Planning each time costs about 25 µs per statement and per row checked (16,000 foreign-key
    # checks: 0.3 s on a fresh connection, 0.7 s this way, 13 s with the stale plan).
    await conn.execute("SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false), "
                       "set_config('plan_cache_mode', 'force_custom_plan', false)",
                       (str(statement_timeout_ms), str(lock_timeout_ms)))
    await conn.commit()
    return conn


def describe(exc: BaseException) -> str:
    """Class and SQLSTATE: safe to log."""
    state = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}" + (f" (SQLSTATE {state})" if state else "")


class Database:
    """One async connection, reopened when it breaks. Tasks take turns: a connection holds one
    transaction at a time, and two tasks interleaving theirs on it (the intake resuming its offsets
    while a batch opens data keys) were seen to crash the worker. A call nested in the task's own
    transaction runs in it (a savepoint)."""

    def __init__(self, dsn: str, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS):
        self.dsn = dsn
        self.statement_timeout_ms = statement_timeout_ms
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self._turn = asyncio.Lock()
        self._holder: asyncio.Task[Any] | None = None

    async def get(self) -> psycopg.AsyncConnection[Any]:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = await connect(self.dsn, self.statement_timeout_ms)
        return self.conn

    async def run(self, what: str, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run ``fn`` in a transaction until it commits. Transient errors are retried forever
        (the batch stays unacknowledged meanwhile); any other error is raised."""
        return await with_retry(what, lambda: self._once(fn))

    async def _once(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        task = asyncio.current_task()
        if task is not None and self._holder is task:
            return await self._transaction(fn)
        async with self._turn:
            self._holder = task
            try:
                return await self._transaction(fn)
            finally:
                self._holder = None

    async def _transaction(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        conn = await self.get()
        try:
            async with conn.transaction():
                return await fn(conn)
        except BaseException:
            if conn.broken:
                self.conn = None
            raise


async def with_retry(what: str, fn: Callable[[], Awaitable[T]], backoff: Backoff | None = None,
                     on_retry: Callable[[BaseException], None] | None = None) -> T:
    """``fn()`` until it returns; transient errors wait ``backoff`` (default: up to 5 s between
    attempts, no deadline), anything else is raised, and so is RetryDeadline."""
    backoff = backoff or Backoff()
    while True:
        try:
            return await fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if on_retry is not None:
                on_retry(exc)
            delay = backoff.next_delay()
            if backoff.attempts in (1, 10) or backoff.attempts % 50 == 0:
                log.warning("%s: %s, retrying (attempt %d)", what, describe(exc), backoff.attempts)
            await asyncio.sleep(delay)
