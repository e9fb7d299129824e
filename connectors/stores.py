"""The stores this project ships, by name: ``lifecycle connector NAME`` builds one here."""

from __future__ import annotations

from collections.abc import Callable

from connectors.base.sink import Sink
from lifecycle.config import Settings
from lifecycle.errors import ConfigError

__all__ = ["STORES", "make_sink", "retention_categories"]


def _postgres(settings: Settings) -> Sink:
    from connectors.postgres import PostgresSink

    return PostgresSink(_need(settings.postgres_dsn, "LIFECYCLE_POSTGRES_DSN"))


def _redis(settings: Settings) -> Sink:
    from connectors.redis import RedisSink

    return RedisSink(_need(settings.redis_url, "LIFECYCLE_REDIS_URL"))


def _files(settings: Settings) -> Sink:
    from connectors.files import FilesSink

    from lifecycle.keys import load_keyring

    return FilesSink(settings.files_dir, load_keyring(settings))


def _mailing_list(settings: Settings) -> Sink:
    from connectors.mailing_list import MailingListSink

    return MailingListSink(_need(settings.postgres_dsn, "LIFECYCLE_POSTGRES_DSN"))


def _need(value: str | None, name: str) -> str:
    if not value:
        raise ConfigError(f"this store needs {name}")
    return value


STORES: dict[str, Callable[[Settings], Sink]] = {
    "postgres": _postgres,
    "redis": _redis,
    "files": _files,
    "mailing-list": _mailing_list,
}


def retention_categories(name: str) -> tuple[str, ...]:
    """The data categories a shipped store sweeps by time (none for a store not shipped here)."""
    if name == "postgres":
        from connectors.postgres import PostgresSink

        return PostgresSink.retention_categories
    if name == "files":
        from connectors.files import FilesSink

        return FilesSink.retention_categories
    return ()


def make_sink(name: str, settings: Settings) -> Sink:
    try:
        factory = STORES[name]
    except KeyError:
        raise ConfigError(f"unknown store {name!r}; stores: {', '.join(sorted(STORES))}") from None
    return factory(settings)
