"""The Sink protocol and the records it works with."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from lifecycle.errors import LifecycleError

__all__ = ["ErasureOrder", "Outcome", "Sink", "TransientStoreError"]


class TransientStoreError(LifecycleError):
    """The store is unreachable or busy: the order is retried, never dropped."""


@dataclasses.dataclass(frozen=True)
class ErasureOrder:
    """A deletion order as read from `tombstones`."""

    request_id: str
    account_id: str
    subjects: tuple[str, ...]  # the account id and every visitor id linked to it
    legal_hold: bool
    categories: tuple[str, ...]

    @classmethod
    def from_record(cls, value: dict[str, Any]) -> ErasureOrder:
        subjects = tuple(value.get("subjects") or ()) or (value["account_id"],)
        return cls(value["request_id"], value["account_id"], subjects, bool(value.get("legal_hold")),
                   tuple(value.get("categories") or ()))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a store did for one order: ``erased``, ``nothing_found``, ``retained_legal_hold`` or
    ``failed``, with the number of items erased."""

    status: str
    items: int = 0
    error: str | None = None


class Sink(Protocol):
    """One downstream store. ``erase`` must be idempotent: a redelivered order erases nothing
    more and reports the outcome again (stores keep a receipt where they can, so the count of
    the first run is reported again)."""

    name: str

    def erase(self, orders: list[ErasureOrder]) -> dict[str, Outcome]:
        """Erase every order's account; return outcomes by request id, after the commit."""
        ...

    def close(self) -> None: ...
