"""The input events as JSON Schema (draft 2020-12, what OpenAPI 3.1 speaks), derived from the Avro
schemas so that there is one source: `POST /v1/events` takes these objects (schemas/validate.py
checks the same rules; docs/protocol.md, "Producing events")."""

from __future__ import annotations

from typing import Any

from lifecycle.schemas.catalog import Catalog, RecordType
from lifecycle.schemas.validate import EARLIEST_MS, LATEST_MS, MAX_STRING, SUBJECT_RULE

__all__ = ["event_schema", "event_schemas"]

_INT64: dict[str, Any] = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
# Text the pipeline stores: no NUL (PostgreSQL text holds none); schemas/validate.py text_problem.
_TEXT = "^[^\\u0000]*$"
_ID = {"type": "string", "minLength": 1, "pattern": _TEXT}

_INT32: dict[str, Any] = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}


def _type(avro: Any) -> dict[str, Any]:
    if isinstance(avro, list):  # the contract's unions are ["null", T]
        branches = [_type(b) for b in avro if b != "null"]
        out: dict[str, Any] = {"anyOf": [*branches, {"type": "null"}]} if "null" in avro else {"anyOf": branches}
        return out
    if isinstance(avro, dict):
        kind = avro.get("type")
        if kind == "enum":
            return {"type": "string", "enum": list(avro["symbols"])}
        if kind == "array":
            return {"type": "array", "items": _type(avro["items"])}
        logical = avro.get("logicalType")
        if logical == "timestamp-millis":
            return {"anyOf": [{"type": "integer", "minimum": EARLIEST_MS, "maximum": LATEST_MS - 1},
                              {"type": "string", "format": "date-time", "pattern": "^2[01][0-9]{2}-"}],
                    "description": "epoch milliseconds, or RFC 3339 with a UTC offset; from 2000-01-01, before "
                                   "2200-01-01, and not in the future beyond the allowed clock skew (a 400 "
                                   "otherwise)"}
        if logical == "uuid":
            return {"type": "string", "format": "uuid"}
        return _type(kind)
    primitives: dict[str, dict[str, Any]] = {
        "string": {"type": "string", "maxLength": MAX_STRING, "pattern": _TEXT}, "long": _INT64, "int": _INT32,
        "boolean": {"type": "boolean"}, "double": {"type": "number"}, "float": {"type": "number"}}
    return dict(primitives[str(avro)])


def event_schema(record: RecordType) -> dict[str, Any]:
    """One event type, flat, as `POST /v1/events` takes it."""
    properties: dict[str, Any] = {}
    required = []
    for field in record.fields:
        prop = _type(field["type"])
        if field["name"] == "event_type":
            prop = {"type": "string", "const": record.event_type}
        if field["name"] == "notice_hash":  # the SHA-256 of the notice shown, in hex
            prop = {"anyOf": [{"type": "string", "pattern": "^[0-9a-f]{64}$"}, {"type": "null"}]}
        if "doc" in field:
            prop["description"] = field["doc"]
        if "lifecycle.personal" in field:
            # The category to ask a key for (`POST /v1/keys`) when sealing the field beforehand.
            prop["x-lifecycle-personal"] = field["lifecycle.personal"]
        properties[field["name"]] = prop
        if "default" not in field:
            required.append(field["name"])
    subject = SUBJECT_RULE.get(record.topic)
    if subject in ("account_id", "visitor_id"):  # required and not null on this topic (schemas/validate.py)
        required.append(subject)
        properties[subject] = {**properties[subject], **_ID}
        properties[subject].pop("anyOf", None)
    schema: dict[str, Any] = {"type": "object", "title": record.event_type, "properties": properties,
                              "required": required, "additionalProperties": False,
                              "x-lifecycle-topic": record.topic}
    if subject == "either":  # an account, a visitor, or both
        schema["anyOf"] = [{"required": [name], "properties": {name: _ID}} for name in ("account_id", "visitor_id")]
    if record.schema.get("doc"):
        schema["description"] = record.schema["doc"]
    return schema


def event_schemas(catalog: Catalog) -> dict[str, dict[str, Any]]:
    """Component name (the record's short name) -> its JSON Schema, for every input event."""
    return {r.short_name: event_schema(r) for r in sorted(catalog.records, key=lambda r: r.short_name)
            if r.is_input}
