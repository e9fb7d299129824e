"""The Sink protocol and the records it works with."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from lifecycle.errors import LifecycleError

__all__ = ["ErasureOrder", "Outcome", "Sink", "TransientStoreError", "RetentionOrder", "Expiry"]


class TransientStoreError(LifecycleError):
    """The store is unreachable or busy: the order is retried, never dropped."""


@dataclasses.dataclass(frozen=True)
class ErasureOrder:
    """A deletion order as read from `tombstones`."""

    request_id: str
    account_id: str
    subjects: tuple[str, ...]  # the account id and every visitor id linked to it
    legal_hold: bool
    categories: tuple[str, ...]  # erase these (deploy/retention.yaml)
    pseudonymise: tuple[str, ...] = ()  # keep these with the identifiers replaced; keep the rest as is

    @classmethod
    def from_record(cls, value: dict[str, Any]) -> ErasureOrder:
        subjects = tuple(value.get("subjects") or ()) or (value["account_id"],)
        return cls(value["request_id"], value["account_id"], subjects, bool(value.get("legal_hold")),
                   tuple(value.get("categories") or ()), tuple(value.get("pseudonymise") or ()))

    def keeps(self, category: str) -> bool:
        """Whether this order leaves ``category`` in place (a legal hold covers it). An order
        that names no category at all erases everything."""
        if not self.categories and not self.pseudonymise:
            return False
        return category not in self.categories and category not in self.pseudonymise


@dataclasses.dataclass(frozen=True)
class RetentionOrder:
    """A retention order as read from `retention-orders`: erase this category's items whose
    window started before ``cutoff_ms``, except those of accounts under legal hold."""

    order_id: str
    category: str
    cutoff_ms: int
    action: str
    held_accounts: frozenset[str]

    @classmethod
    def from_record(cls, value: dict[str, Any]) -> RetentionOrder:
        return cls(value["order_id"], value["category"], int(value["cutoff"]), value.get("action") or "erase",
                   frozenset(value.get("held_accounts") or ()))


@dataclasses.dataclass(frozen=True)
class Expiry:
    """What a sweep did: items erased, and the start time of the oldest item of the category
    still held (held accounts excepted), or None when there is none."""

    items: int
    oldest_ms: int | None


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
    the first run is reported again).

    A store that keeps data of categories swept by time lists them in ``retention_categories``
    and implements ``expire(order) -> Expiry``: erase in bounded batches (each batch its own
    transaction, so that a sweep never holds long locks), idempotent by nature (a second sweep
    finds nothing more)."""

    name: str

    def erase(self, orders: list[ErasureOrder]) -> dict[str, Outcome]:
        """Erase every order's account; return outcomes by request id, after the commit."""
        ...

    def close(self) -> None: ...
