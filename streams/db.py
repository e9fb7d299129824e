"""PostgreSQL access for the processors: the schema, connections, and retry of transient errors.

Errors are told apart by class (psycopg's one class per SQLSTATE family); only connection
and serialization problems are retried, with exponential backoff and jitter. Logs name the
error class and SQLSTATE only: PostgreSQL's DETAIL text can quote row values.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from schemas.errors import RegistryError

__all__ = ["SCHEMA_SQL", "apply_schema", "connect", "with_retry", "is_transient"]

log = logging.getLogger("lifecycle.db")
SCHEMA_SQL = (Path(__file__).with_name("schema.sql")).read_text()
T = TypeVar("T")


def apply_schema(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(7400001)")  # workers starting together
        try:
            conn.execute(SCHEMA_SQL)
        finally:
            conn.execute("SELECT pg_advisory_unlock(7400001)")


async def connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=False, connect_timeout=5)


def is_transient(exc: BaseException) -> bool:
    return isinstance(
        exc,
        (
            psycopg.OperationalError,
            psycopg.errors.SerializationFailure,
            psycopg.errors.DeadlockDetected,
            psycopg.InterfaceError,
            OSError,
            RegistryError,  # a Schema Registry that is down or slow comes back
        ),
    )


def describe(exc: BaseException) -> str:
    """Class and SQLSTATE: safe to log."""
    state = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}" + (f" (SQLSTATE {state})" if state else "")


class Database:
    """One async connection, reopened when it breaks."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def get(self) -> psycopg.AsyncConnection[Any]:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = await connect(self.dsn)
        return self.conn

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def run(self, what: str, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run ``fn`` in a transaction until it commits. Transient errors are retried forever
        (the batch stays unacknowledged meanwhile); any other error is raised."""
        return await with_retry(what, lambda: self._once(fn))

    async def _once(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        conn = await self.get()
        try:
            async with conn.transaction():
                return await fn(conn)
        except BaseException:
            if conn.broken:
                self.conn = None
            raise


async def with_retry(what: str, fn: Callable[[], Awaitable[T]], max_delay_s: float = 5.0,
                     on_retry: Callable[[BaseException], None] | None = None) -> T:
    delay = 0.1
    attempt = 0
    while True:
        try:
            return await fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if on_retry is not None:
                on_retry(exc)
            attempt += 1
            if attempt in (1, 10) or attempt % 50 == 0:
                log.warning("%s: %s, retrying (attempt %d)", what, describe(exc), attempt)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, max_delay_s)
