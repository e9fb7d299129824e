"""What every command shares."""

from __future__ import annotations

from typing import Any

from lifecycle.core.config import Settings
from lifecycle.core.errors import LifecycleError

__all__ = ["in_transaction", "need_broker", "say"]


def say(line: str) -> None:
    print(line, flush=True)


def in_transaction(settings: Settings, fn: Any) -> Any:
    """``await fn(conn)`` in one transaction on a connection of its own to the pipeline's database."""
    import asyncio

    from lifecycle.streams.runtime.database import connect

    async def run() -> Any:
        conn = await connect(settings.postgres_dsn or "")
        try:
            async with conn.transaction():
                return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def need_broker(settings: Settings, command: str) -> None:
    if not settings.kafka_bootstrap:
        raise LifecycleError(
            f"`lifecycle {command}` needs LIFECYCLE_KAFKA_BOOTSTRAP; "
            "`lifecycle up` starts an embedded broker if you have none"
        )
