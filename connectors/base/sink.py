"""The contract of a downstream store (`Sink`, and `RetentionSink` for one that also sweeps data by
time) and the records it works with. A store shipped here is one folder beside this one
implementing it; the runner (runner.py) does the Kafka side."""

from __future__ import annotations

import abc
import base64
import contextlib
import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Self

from lifecycle.core.config import Settings
from lifecycle.core.errors import ConfigError, LifecycleError, TransientError
from lifecycle.core.timeutil import MAX_MS
from lifecycle.schemas.statuses import AckStatus
from lifecycle.schemas.validate import text_problem

__all__ = ["ErasureOrder", "Outcome", "Sink", "RetentionSink", "TransientStoreError", "RetentionOrder", "Expiry",
           "AckStatus", "required", "AccessOrder", "HeldData", "jsonable", "InvalidOrder", "unreachable"]


class TransientStoreError(TransientError):
    """The store is unreachable or busy: the order is retried, never dropped."""


@contextlib.contextmanager
def unreachable(what: str, *errors: type[BaseException]) -> Iterator[None]:
    """A store's I/O errors (``errors``: its client's, e.g. OSError for a folder) as the one error the
    runner retries. The message names the store's part, never a path, key or value."""
    try:
        yield
    except errors as exc:
        raise TransientStoreError(f"{what} unreachable") from exc


class InvalidOrder(LifecycleError):
    """An order that decodes but cannot be one the pipeline sent (an identifier that is not one, a
    number out of range): dead-lettered, never acted upon. The message names the field, never its value."""


_HASH = re.compile(r"^[0-9a-f]{64}$")
_MAX_LIST = 100_000


def _uuid(value: Any, name: str) -> str:
    """A request or order id: a UUID in its canonical form, so that it can name a file or a row."""
    try:
        if isinstance(value, str) and str(uuid.UUID(value)) == value:
            return value
    except ValueError:
        pass
    raise InvalidOrder(f"{name}: not a UUID in canonical form")


def _identifier(value: Any, name: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty) or len(value) > 256 or \
            (value and (not value.isprintable() or text_problem(value) is not None)):
        raise InvalidOrder(f"{name}: not an identifier (1 to 256 printable characters)")
    return value


def _identifiers(values: Any, name: str) -> tuple[str, ...]:
    values = tuple(values or ())
    if len(values) > _MAX_LIST:
        raise InvalidOrder(f"{name}: more than {_MAX_LIST} items")
    return tuple(_identifier(v, name) for v in values)


def _names(values: Any, name: str) -> tuple[str, ...]:
    """Category names: short and printable."""
    names = tuple(values or ())
    if len(names) > 256 or any(not isinstance(v, str) or not 0 < len(v) <= 64 or not v.isprintable() for v in names):
        raise InvalidOrder(f"{name}: not a list of category names")
    return tuple(str(v) for v in names)


def _number(value: Any, name: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise InvalidOrder(f"{name}: out of range")
    return value


def _nonce(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 64 or not value.isascii() or not value.isprintable():
        raise InvalidOrder("nonce: not a nonce")
    return value


@dataclasses.dataclass(frozen=True)
class ErasureOrder:
    """A deletion order as read from `tombstones`."""

    request_id: str
    account_id: str
    subjects: tuple[str, ...]  # the account id and every visitor id linked to it
    legal_hold: bool
    categories: tuple[str, ...]  # erase these (deploy/retention.yaml)
    pseudonymise: tuple[str, ...] = ()  # keep these with the identifiers replaced; keep the rest as is
    action: str = "erase"  # or "verify": look again, delete nothing
    round: int = 0  # one more each time a verification found data again
    subject_hashes: tuple[str, ...] = ()  # keyed hashes, the account's first; alone once the ids are gone
    nonce: str = ""  # echoed by the acknowledgement (lifecycle/core/orderkeys.py)

    @classmethod
    def from_record(cls, value: dict[str, Any]) -> ErasureOrder:
        """The order, every identifier parsed strictly (InvalidOrder otherwise)."""
        hashes = tuple(value.get("subject_hashes") or ())
        if len(hashes) > _MAX_LIST or not all(isinstance(h, str) and _HASH.match(h) for h in hashes):
            raise InvalidOrder("subject_hashes: not keyed hashes (64 lowercase hex digits each)")
        account = _identifier(value["account_id"], "account_id", empty=bool(hashes))
        subjects = _identifiers(value.get("subjects"), "subjects") or ((account,) if account else ())
        action = value.get("action") or "erase"
        if action not in ("erase", "verify"):
            raise InvalidOrder("action: not erase or verify")
        return cls(_uuid(value["request_id"], "request_id"), account, subjects, bool(value.get("legal_hold")),
                   _names(value.get("categories"), "categories"), _names(value.get("pseudonymise"), "pseudonymise"),
                   action, _number(value.get("round") or 0, "round", 2**31 - 1), hashes,
                   _nonce(value.get("nonce", "")))

    @property
    def receipt_id(self) -> str:
        """What a store keys its receipt on: the request for the first round, a new id for each
        later one (data found again is erased again, not answered from the first receipt)."""
        if not self.round:
            return self.request_id
        return str(uuid.uuid5(uuid.UUID(self.request_id), f"round-{self.round}"))

    @property
    def by_hash_only(self) -> bool:
        """The order names its subjects by keyed hashes alone (the erasure completed before)."""
        return not self.account_id and bool(self.subject_hashes)

    def keeps(self, category: str) -> bool:
        """Whether this order leaves ``category`` in place (a legal hold covers it). An order
        that names no category at all erases everything."""
        if not self.categories and not self.pseudonymise:
            return False
        return category not in self.categories and category not in self.pseudonymise


@dataclasses.dataclass(frozen=True)
class AccessOrder:
    """An access order as read from `access-orders`: what the store holds about these subjects,
    for a copy the person asked for (docs/access.md)."""

    request_id: str
    account_id: str
    subjects: tuple[str, ...]  # the account id and every visitor id linked to it
    answer_key: bytes  # the X25519 public key the answer is sealed to
    nonce: str = ""  # echoed by every part of the answer (lifecycle/core/orderkeys.py)

    @classmethod
    def from_record(cls, value: dict[str, Any]) -> AccessOrder:
        """The order, every identifier parsed strictly (InvalidOrder otherwise)."""
        account = _identifier(value["account_id"], "account_id")
        subjects = _identifiers(value.get("subjects"), "subjects") or (account,)
        if len(value["answer_key"]) != 32:
            raise InvalidOrder("answer_key: not 32 bytes (an X25519 public key)")
        return cls(_uuid(value["request_id"], "request_id"), account, subjects, bytes(value["answer_key"]),
                   _nonce(value.get("nonce", "")))


@dataclasses.dataclass(frozen=True)
class HeldData:
    """What a store holds about an access order's subjects: JSON-ready data (what it is called
    in the store, then the items: rows, keys, files) and how many items."""

    data: dict[str, Any]
    items: int


@dataclasses.dataclass(frozen=True)
class RetentionOrder:
    """A retention order as read from `retention-orders`: erase this category's items whose
    window started before ``cutoff_ms``, except those of accounts under legal hold."""

    order_id: str
    category: str
    cutoff_ms: int
    action: str
    held_accounts: frozenset[str]
    nonce: str = ""  # echoed by the RetentionAck (lifecycle/core/orderkeys.py)

    @classmethod
    def from_record(cls, value: dict[str, Any]) -> RetentionOrder:
        """The order, every field parsed strictly (InvalidOrder otherwise)."""
        (category,) = _names([value["category"]], "category")
        return cls(_uuid(value["order_id"], "order_id"), category, _number(value["cutoff"], "cutoff", MAX_MS),
                   _names([value.get("action") or "erase"], "action")[0],
                   frozenset(_identifiers(value.get("held_accounts"), "held_accounts")), _nonce(value.get("nonce", "")))


@dataclasses.dataclass(frozen=True)
class Expiry:
    """What a sweep did: items erased, and the start time of the oldest item of the category
    still held (held accounts excepted), or None when there is none."""

    items: int
    oldest_ms: int | None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a store did for one order, with the number of items erased."""

    status: AckStatus
    items: int = 0
    error: str | None = None


class Sink(abc.ABC):
    """One downstream store. ``erase`` must be idempotent: a redelivered order erases nothing
    more and reports the outcome again (stores keep a receipt where they can, so the count of
    the first run is reported again). Delivery: at-least-once orders, exactly-once in effect."""

    name: ClassVar[str]
    # What the store's PostgreSQL role may do, as statements run by the schema setup ({role}: the
    # store's role; {owner}: the owner of the session-log partitions); none for a store that
    # keeps nothing in the pipeline's database (lifecycle/core/pgroles.py).
    database_grants: ClassVar[tuple[str, ...]] = ()
    # The data categories the store keeps (deploy/retention.yaml): the record of processing lists
    # it as their recipient (lifecycle/records.py).
    holds: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The store as configured (``lifecycle connector NAME``)."""

    @abc.abstractmethod
    def erase(self, orders: list[ErasureOrder]) -> dict[str, Outcome]:
        """Erase every order's account; return outcomes by request id, after the commit. Raise
        TransientStoreError when the store cannot be reached (the batch is retried)."""

    @abc.abstractmethod
    def verify(self, orders: list[ErasureOrder]) -> dict[str, int]:
        """Look again, deleting nothing: how many items of what each order erases (its categories
        and those it pseudonymises) the store still holds for its subjects, by request id. Raise
        TransientStoreError when the store cannot be reached."""

    @abc.abstractmethod
    def subject_ids(self) -> Iterable[str]:
        """Every subject id (account or visitor id) the store holds data for. An order that
        names its subjects by keyed hashes alone is matched against these (runner.py)."""

    @abc.abstractmethod
    def export(self, orders: list[AccessOrder]) -> dict[str, HeldData]:
        """What the store holds about each order's subjects, by request id, changing nothing.
        Raise TransientStoreError when the store cannot be reached."""

    def tick(self) -> None:
        """Periodic work between batches (a projection to refresh); none by default."""
        return None

    @abc.abstractmethod
    def close(self) -> None: ...


class RetentionSink(Sink):
    """A store that also keeps data of categories swept by time (deploy/retention.yaml)."""

    retention_categories: ClassVar[tuple[str, ...]]

    @abc.abstractmethod
    def expire(self, order: RetentionOrder) -> Expiry:
        """Erase the category's items older than the cutoff, in bounded batches (each its own
        transaction, so a sweep never holds long locks); idempotent by nature."""

    @abc.abstractmethod
    def plan(self, order: RetentionOrder) -> int:
        """How many items ``expire(order)`` would erase now; erases nothing."""


def jsonable(value: Any) -> Any:
    """A stored value as JSON holds it: times in ISO 8601 (UTC), bytes in base64."""
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (bytes, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def required(value: str | None, name: str) -> str:
    """A setting a store cannot run without."""
    if not value:
        raise ConfigError(f"this store needs {name}")
    return value
