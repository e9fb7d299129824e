"""A PostgreSQL connection for sinks: opened on first use, set up once, reopened after a break,
and unreachable-database errors turned into TransientStoreError (the runner retries those)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

from lifecycle.connectors.base.sink import TransientStoreError

__all__ = ["SinkConnection"]


class SinkConnection:
    def __init__(self, dsn: str, setup_sql: str, what: str):
        self.dsn = dsn
        self.setup_sql = setup_sql
        self.what = what
        self.conn: psycopg.Connection[Any] | None = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            if self.conn is None or self.conn.closed or self.conn.broken:
                self.conn = psycopg.connect(self.dsn, connect_timeout=5)
                with self.conn.transaction():
                    self.conn.execute(self.setup_sql)
            with self.conn.transaction():
                yield self.conn
        except psycopg.OperationalError as exc:
            self.conn = None
            raise TransientStoreError(f"{self.what} unreachable") from exc

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
