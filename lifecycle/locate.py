"""How the commands that read state find the stack: the servers named in the environment, else
the embedded stack that `lifecycle up` runs (described in ``<state>/run/stack.json``), else, for
commands that need only the database, the embedded PostgreSQL started over ``<state>/pgdata`` for
the length of the command."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from lifecycle.core.config import Settings
from lifecycle.core.errors import LifecycleError
from lifecycle.embedded.process import pid_alive

__all__ = ["running_stack", "located"]


def running_stack(settings: Settings) -> dict[str, Any] | None:
    """The running `up`'s servers, or None when none runs in this state folder."""
    path = settings.state_dir / "run" / "stack.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("owner"), int) and pid_alive(info["owner"]) else None


@contextlib.contextmanager
def located(settings: Settings, *, broker: bool, database: bool,
            say: Callable[[str], None] = lambda _: None) -> Iterator[Settings]:
    """Settings with the servers this command needs filled in; raises LifecycleError saying what
    to do when they cannot be found."""
    missing_db = database and not settings.postgres_dsn
    missing_broker = broker and not settings.kafka_bootstrap
    if not (missing_db or missing_broker):
        yield settings
        return
    info = running_stack(settings)
    if info is not None:
        yield settings.with_servers(kafka_bootstrap=settings.kafka_bootstrap or info["kafka_bootstrap"],
                                    postgres_dsn=settings.postgres_dsn or info["postgres_dsn"],
                                    redis_url=settings.redis_url or info.get("redis_url"))
        return
    where = settings.state_dir
    if missing_broker:
        raise LifecycleError(f"no running `lifecycle up` in {where} and no LIFECYCLE_KAFKA_BOOTSTRAP: this command "
                             "reads the broker; start `lifecycle up`, or name a broker")
    if not (where / "pgdata").is_dir():
        raise LifecycleError(f"no stack in {where} (no running `lifecycle up`, no database) and no "
                             "LIFECYCLE_POSTGRES_DSN")
    from lifecycle.embedded.postgres import EmbeddedPostgres

    postgres = EmbeddedPostgres(where / "pgdata", where / "logs" / "postgres-cli.log", fast=settings.embedded_pg_fast)
    say(f"the stack is stopped: reading its database ({where / 'pgdata'}) with a PostgreSQL of this command's own")
    postgres.start()
    try:
        yield settings.with_servers(kafka_bootstrap=settings.kafka_bootstrap or "", postgres_dsn=postgres.dsn())
    finally:
        postgres.stop()
