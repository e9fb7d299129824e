"""The catalog of record types, read from the ``.avsc`` files in this folder.

Each schema names its topic (``lifecycle.topic``) and, for input events, its event type
(``lifecycle.event_type``), so a new event type is one new file.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

__all__ = ["legacy_schema_id", "Catalog", "RecordType", "load_catalog", "schema_id", "plain_schema", "SCHEMA_DIR"]

SCHEMA_DIR = Path(__file__).resolve().parent
ENVELOPE_FIELDS = ("event_id", "event_type", "occurred_at", "account_id", "visitor_id", "source")
_RELEASED = re.compile(r"^(?P<name>[A-Za-z0-9_]+)\.v(?P<version>\d+)\.avsc$")


def schema_id(schema: dict[str, Any]) -> int:
    """A stable id for a schema: its CRC-64-AVRO fingerprint (the Avro specification's 64-bit
    Rabin fingerprint of the Parsing Canonical Form, Java's ``parsingFingerprint64``) folded into a
    positive int32, so that the same schema has the same id on every machine with no id allocation
    service, and any Avro library computes it (docs/schemas.md)."""
    # fastavro gives the fingerprint's bytes little-endian, as the specification writes them.
    return _fold(int.from_bytes(bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")),
                                "little"))


def legacy_schema_id(schema: dict[str, Any]) -> int:
    """The id before issue 27, read from those bytes as a big-endian number: no library computes it
    from the specification. Still resolved when reading, so that records already on a topic decode."""
    return _fold(int(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"), 16))


def _fold(value: int) -> int:
    return ((value ^ (value >> 31) ^ (value >> 62)) & 0x7FFFFFFF) or 1


def plain_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without logical types: the codec works with epoch-millisecond ints and plain
    strings, which are faster to read and need no conversion before hashing or SQL."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "logicalType"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    stripped: dict[str, Any] = strip(copy.deepcopy(schema))
    return stripped


@dataclasses.dataclass(frozen=True)
class RecordType:
    """One record type: its schema and where it belongs."""

    name: str  # full name, e.g. lifecycle.events.SessionStarted
    topic: str  # unprefixed contract topic, e.g. session-events
    event_type: str | None  # e.g. session.started; None for output records
    schema: dict[str, Any] = dataclasses.field(repr=False, compare=False)

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @functools.cached_property
    def parsed(self) -> Any:
        """The fastavro-parsed plain schema, parsed once."""
        return fastavro.parse_schema(plain_schema(self.schema))

    @functools.cached_property
    def schema_id(self) -> int:
        return schema_id(self.schema)

    @functools.cached_property
    def personal(self) -> tuple[tuple[str, str], ...]:
        """(field, category) of each top-level field marked ``lifecycle.personal`` (schemas/personal.py)."""
        return tuple((f["name"], str(f["lifecycle.personal"])) for f in self.schema["fields"]
                     if isinstance(f.get("lifecycle.personal"), str))

    @property
    def fields(self) -> list[dict[str, Any]]:
        return list(self.schema["fields"])

    @property
    def is_input(self) -> bool:
        return self.event_type is not None


def _full_name(schema: dict[str, Any]) -> str:
    ns = schema.get("namespace")
    return f"{ns}.{schema['name']}" if ns else str(schema["name"])


class Catalog:
    """Every current record type, plus every released version of each, by name and event type."""

    def __init__(self, records: list[RecordType], released: dict[str, list[dict[str, Any]]]):
        self.records = records
        self.released = released  # short name -> schemas, oldest first
        self._by_name = {r.name: r for r in records}
        self._by_short = {r.short_name: r for r in records}
        self._by_event = {r.event_type: r for r in records if r.event_type}

    def by_name(self, name: str) -> RecordType:
        """Look a record type up by its full or short name."""
        record = self._by_name.get(name) or self._by_short.get(name)
        if record is None:
            raise KeyError(name)
        return record

    def by_event_type(self, event_type: str) -> RecordType | None:
        return self._by_event.get(event_type)

    @property
    def event_types(self) -> list[str]:
        return sorted(self._by_event)

    @property
    def input_topics(self) -> list[str]:
        return sorted({r.topic for r in self.records if r.is_input})

    def all_schemas(self) -> list[dict[str, Any]]:
        """Current and released schemas: everything the built-in registry can serve."""
        out = [r.schema for r in self.records]
        for versions in self.released.values():
            out.extend(versions)
        return out


@functools.lru_cache(maxsize=4)
def load_catalog(directory: Path = SCHEMA_DIR) -> Catalog:
    """Read ``avro/*.avsc`` and ``released/*.vN.avsc`` below ``directory``."""
    records = []
    for path in sorted((directory / "avro").glob("*.avsc")):
        schema = json.loads(path.read_text())
        records.append(
            RecordType(
                name=_full_name(schema),
                topic=schema["lifecycle.topic"],
                event_type=schema.get("lifecycle.event_type"),
                schema=schema,
            )
        )
    released: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for path in sorted((directory / "released").glob("*.avsc")):
        match = _RELEASED.match(path.name)
        if not match:
            continue
        released.setdefault(match["name"], []).append(
            (int(match["version"]), json.loads(path.read_text()))
        )
    ordered = {name: [s for _, s in sorted(v, key=lambda t: t[0])] for name, v in released.items()}
    return Catalog(records, ordered)
