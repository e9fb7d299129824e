"""The Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body.

fastavro on the hot path (schemas parsed once per id, schemaless reads and writes); values are
plain Python: timestamps as epoch milliseconds, UUIDs as strings.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from typing import Any

import fastavro

from lifecycle.schemas.catalog import Catalog, RecordType, load_catalog, plain_schema
from lifecycle.schemas.errors import (
    DecodeError,
    NotConfluentFramed,
    SchemaMismatch,
    SchemaNotAllowed,
    TruncatedRecord,
    UnknownSchemaId,
)
from lifecycle.schemas.registry import BuiltinRegistry, Registry

__all__ = ["Codec", "Decoded", "MAGIC", "HEADER"]

MAGIC = 0
HEADER = struct.Struct(">bI")


@dataclasses.dataclass(frozen=True)
class Decoded:
    """A record read off the wire: its type, the writer's schema id and its value."""

    record: RecordType
    schema_id: int
    value: dict[str, Any]


class Codec:
    """Encode and decode records of the catalog in the Confluent wire format."""

    def __init__(
        self,
        registry: Registry | None = None,
        catalog: Catalog | None = None,
        *,
        topic_prefix: str = "lifecycle.",
    ):
        self.catalog = catalog or load_catalog()
        self.registry = registry or BuiltinRegistry(self.catalog)
        self.topic_prefix = topic_prefix
        self._write_ids: dict[str, int] = {}
        self._writers: dict[int, Any] = {}  # schema id -> (parsed writer, RecordType or None)
        self._same: dict[int, bool] = {}  # schema id -> its writer schema is its reader's

    # -- writing ---------------------------------------------------------------------------
    def encode(self, record: RecordType | str, value: dict[str, Any]) -> bytes:
        """Frame ``value`` as ``record`` (a RecordType or its name). Raises ValueError if the
        value does not fit the schema (callers validate first; see schemas.validate)."""
        rt = record if isinstance(record, RecordType) else self.catalog.by_name(record)
        sid = self._write_ids.get(rt.name)
        if sid is None:
            subject = f"{self.topic_prefix}{rt.topic}-{rt.name}"
            sid = self.registry.id_for(rt.schema, subject)
            self._write_ids[rt.name] = sid
        buf = io.BytesIO()
        buf.write(HEADER.pack(MAGIC, sid))
        fastavro.schemaless_writer(buf, rt.parsed, value)
        return buf.getvalue()

    def encode_event(self, value: dict[str, Any]) -> bytes:
        """Encode an input event, choosing its record from ``event_type``."""
        rt = self.catalog.by_event_type(value.get("event_type", ""))
        if rt is None:
            raise ValueError("unknown event_type")
        return self.encode(rt, value)

    # -- reading ---------------------------------------------------------------------------
    def _writer(self, sid: int) -> tuple[Any, RecordType | None]:
        cached: tuple[Any, RecordType | None] | None = self._writers.get(sid)
        if cached is not None:
            return cached
        schema = self.registry.schema_for(sid)  # raises UnknownSchemaId
        try:
            parsed = fastavro.parse_schema(plain_schema(schema))
        except Exception as exc:  # a registry may hold schemas we cannot parse
            raise SchemaMismatch(f"schema id {sid} cannot be parsed") from exc
        ns = schema.get("namespace")
        name = f"{ns}.{schema['name']}" if ns else schema.get("name", "")
        try:
            reader: RecordType | None = self.catalog.by_name(name)
        except KeyError:
            reader = None
        # The same schema: read without resolution. fastavro compares writer and reader schemas
        # on every call otherwise (a third of a session event's decode).
        self._same[sid] = reader is not None and parsed == reader.parsed
        self._writers[sid] = (parsed, reader)
        return parsed, reader

    def decode(self, data: bytes | None, *, topic: str | None = None) -> Decoded:
        """Read one framed record. ``topic`` (unprefixed) restricts which record types are
        accepted. Every failure is a DecodeError subclass with a message free of record values."""
        if data is None:
            raise NotConfluentFramed("null value where a record was expected")
        if len(data) < HEADER.size:
            raise NotConfluentFramed(f"{len(data)} bytes, shorter than the 5-byte header")
        magic, sid = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise NotConfluentFramed(f"magic byte {magic & 0xFF:#04x}, expected 0x00")
        writer, reader = self._writer(sid)
        if reader is None:
            raise SchemaMismatch(f"schema id {sid} is not a record type of this pipeline")
        if topic is not None and reader.topic != topic:
            raise SchemaNotAllowed(f"{reader.short_name} does not belong on {topic}")
        buf = io.BytesIO(data)
        buf.seek(HEADER.size)
        try:
            value = fastavro.schemaless_reader(buf, writer, None if self._same[sid] else reader.parsed)
        except UnicodeDecodeError:
            raise TruncatedRecord(f"invalid UTF-8 in a string of {reader.short_name}") from None
        except (EOFError, StopIteration, IndexError, struct.error):
            raise TruncatedRecord(f"{reader.short_name} body ends early") from None
        except fastavro.read.SchemaResolutionError:
            raise SchemaMismatch(f"schema id {sid} cannot be read as {reader.short_name}") from None
        except (DecodeError, UnknownSchemaId):
            raise
        except Exception as exc:  # fastavro raises many kinds on garbage; none may escape
            raise TruncatedRecord(
                f"{reader.short_name} body is malformed ({type(exc).__name__})"
            ) from None
        if buf.tell() != len(data):
            raise TruncatedRecord(
                f"{len(data) - buf.tell()} trailing bytes after a {reader.short_name} body"
            )
        if not isinstance(value, dict):  # a record schema always reads as a dict
            raise TruncatedRecord(f"{reader.short_name} body is not a record")
        return Decoded(record=reader, schema_id=sid, value=value)
