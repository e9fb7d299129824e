"""The data map: which field of which record holds personal data, and of which category.

A schema marks each such field with ``"lifecycle.personal": "<category>"``, a category of
deploy/retention.yaml; ``"lifecycle.personal": false`` (with a ``doc`` saying why) marks a field
whose name looks personal but whose value is not (an aggregate's referrer domain).
tests/unit/test_datamap.py fails on a field that looks personal and carries neither, and on an
unknown category. Only strings (or null|string) can be marked: their sealed form is a string in
the same field (lifecycle/core/crypto.py).

``seal`` and ``unseal`` apply the map to one record's value, with the subject's data keys
(lifecycle/core/datakeys.py) prepared or loaded first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from lifecycle.core.crypto import ERASED, PREFIX, seal_with
from lifecycle.core.datakeys import DataKey, DataKeys
from lifecycle.core.policy import Policy
from lifecycle.schemas.catalog import Catalog, RecordType

__all__ = ["ANNOTATION", "LOOKS_PERSONAL", "key_pairs", "seal", "unseal", "datamap",
           "tokens_of"]

ANNOTATION = "lifecycle.personal"
# Field names that suggest personal data: each must be annotated one way or the other.
LOOKS_PERSONAL = re.compile(r"(e-?mail|phone|name|(^|_|\b)ip($|_|\b)|user.?agent|domain|path|address|referr?er|"
                            r"birth|street|postcode|zip|city|ssn|iban|card)", re.IGNORECASE)


def key_pairs(record: RecordType, subject: str) -> list[tuple[str, str]]:
    """The (subject, category) pairs whose keys sealing a ``record`` of ``subject`` needs."""
    return [(subject, category) for category in {c for _, c in record.personal}]


def seal(key_for: Callable[[str], DataKey], record: RecordType, value: dict[str, Any],
         subject: str) -> dict[str, Any]:
    """``value`` with every personal field sealed under ``key_for(category)``, the subject's key of
    that category (``DataKeys.keys_of``); a field sealed already stays as it is."""
    fields = record.personal
    if not fields:
        return value
    out = dict(value)
    for name, category in fields:
        plain = out.get(name)
        if isinstance(plain, str) and not plain.startswith(PREFIX):
            key = key_for(category)
            out[name] = seal_with(key.aead, key.kid, subject, name, plain.encode()) if key.aead is not None else ERASED
    return out


def tokens_of(record: RecordType, value: dict[str, Any]) -> Iterable[object]:
    """The values of ``value``'s personal fields (what ``DataKeys.load`` looks through)."""
    return (value.get(name) for name, _ in record.personal)


def unseal(keys: DataKeys, record: RecordType, value: dict[str, Any], subject: str) -> tuple[dict[str, Any], int]:
    """(``value`` with its personal fields opened, how many were in clear already). Raises Forged
    for a sealed value that is not this subject's field; a destroyed key gives ERASED."""
    fields = record.personal
    if not fields:
        return value, 0
    out = value
    clear = 0
    for name, category in fields:
        token = value.get(name)
        if isinstance(token, str):
            if token.startswith(PREFIX):
                if out is value:
                    out = dict(value)
                out[name] = keys.open(token, subject, name, category)
            elif token != ERASED:  # what a producer sealed for a subject already erased
                clear += 1
    return out, clear


def datamap(catalog: Catalog, policy: Policy) -> list[dict[str, str]]:
    """One row per personal field: topic, record, field, category, the category's retention."""
    rows = []
    for record in sorted(catalog.records, key=lambda r: (r.topic, r.short_name)):
        for name, category in record.personal:
            rows.append({"topic": record.topic, "record": record.short_name, "field": name,
                         "category": category, "retention": retention_words(policy, category)})
    return rows


def retention_words(policy: Policy, category: str) -> str:
    """How long a category is kept, in words: "12 months from session end"."""
    c = policy.categories[category]
    return ("until the account closes" if c.starts == "account_closure" and c.window.amount == 0
            else f"{c.window} from {c.starts.replace('_', ' ')}")
