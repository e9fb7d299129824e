"""The stores this project ships, by name: ``lifecycle connector NAME`` builds one here. A new
store is one folder under connectors/ with a Sink (connectors/base/sink.py) and a line below."""

from __future__ import annotations

from lifecycle.connectors.base.sink import RetentionSink, Sink
from lifecycle.connectors.files import FilesSink
from lifecycle.connectors.mailing_list import MailingListSink
from lifecycle.connectors.postgres import PostgresSink
from lifecycle.connectors.redis import RedisSink
from lifecycle.core.config import Settings
from lifecycle.core.errors import ConfigError

__all__ = ["STORES", "make_sink", "retention_categories", "database_grants",
           "held_categories"]

STORES: dict[str, type[Sink]] = {
    "postgres": PostgresSink,
    "redis": RedisSink,
    "files": FilesSink,
    "mailing-list": MailingListSink,
}


def retention_categories(name: str) -> tuple[str, ...]:
    """The data categories a shipped store sweeps by time (none for a store not shipped here)."""
    cls = STORES.get(name)
    return cls.retention_categories if cls is not None and issubclass(cls, RetentionSink) else ()


def database_grants() -> dict[str, tuple[str, ...]]:
    """What each shipped store's PostgreSQL role may touch (lifecycle/core/pgroles.py)."""
    return {name: cls.database_grants for name, cls in STORES.items()}


def held_categories(name: str) -> tuple[str, ...] | None:
    """The categories a shipped store keeps; None for a store not shipped here."""
    cls = STORES.get(name)
    return cls.holds if cls is not None else None


def make_sink(name: str, settings: Settings) -> Sink:
    try:
        cls = STORES[name]
    except KeyError:
        raise ConfigError(f"unknown store {name!r}; stores: {', '.join(sorted(STORES))}") from None
    return cls.from_settings(settings)
