"""The processor protocol."""

from __future__ import annotations

from typing import Any, Protocol

import psycopg

from lifecycle.streams.runtime.context import PipelineContext

__all__ = ["PipelineContext", "Processor"]


class Processor(Protocol):
    topic: str  # the contract input topic it consumes

    async def apply(self, conn: psycopg.AsyncConnection[Any], events: list[dict[str, Any]],
                    ctx: PipelineContext) -> None:
        """Apply new events (in partition order) inside the caller's transaction."""

    async def tick(self, conn: psycopg.AsyncConnection[Any], now_ms: int, ctx: PipelineContext) -> None:
        """Clock-driven work (expiry, timeouts, closing windows) inside a transaction."""
