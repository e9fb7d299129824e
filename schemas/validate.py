"""Contract rules for input events, shared by every entry path (HTTP, SDK, raw topics).

``from_json`` turns one flat JSON object into an Avro-ready value, naming every bad field.
``check_event`` applies the rules a schema cannot express (envelope, event type, subject key),
to values that came from JSON and from the wire alike.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import Any

from lifecycle.schemas.catalog import Catalog, RecordType, load_catalog
from lifecycle.schemas.errors import FieldError, InvalidEvent, ValidationFailed

__all__ = ["from_json", "check_event", "subject_key", "MAX_STRING", "PURPOSES", "text_problem", "SUBJECT_RULE",
           "EARLIEST_MS", "LATEST_MS"]

PURPOSES = ("necessary", "preferences", "analytics", "advertising")

# Times outside [2000-01-01, now + skew] are refused: a far-past event is a bug upstream, and a
# far-future one would hold retention and expiry hostage to a wrong clock.
EARLIEST_MS = 946_684_800_000
# 2200-01-01: an absolute ceiling whatever the clock. On the event-time clock (tests, the demo)
# events move time, and one dated past year 9999 stopped every tick (issue 28's fuzzer).
LATEST_MS = 7_258_118_400_000
MAX_STRING = 4096  # no field of the contract needs more; longer values are abuse or bugs
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
# Subjects: who each topic's events must name (docs/topics.md).
SUBJECT_RULE = {
    "account-events": "account_id",
    "session-events": "account_id",
    "analytics-events": "visitor_id",
    "consent-events": "either",
}


def _parse_time(value: Any) -> int | str:
    """Epoch milliseconds from an int or an RFC 3339 string; a problem text otherwise."""
    if isinstance(value, bool):
        return "expected epoch milliseconds or an RFC 3339 string"
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else "out of range"
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            return "not an RFC 3339 timestamp"
        if parsed.tzinfo is None:
            return "RFC 3339 timestamp needs a UTC offset"
        return int(parsed.timestamp() * 1000)
    return "expected epoch milliseconds or an RFC 3339 string"


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored or sent as it is (a NUL, or a lone surrogate that is no UTF-8),
    or None. The client's problem, answered 400: never a database error."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "not valid UTF-8 (a lone surrogate)"
    return None


Converter = Callable[[Any], tuple[Any, "str | None"]]  # a JSON value -> (Avro value, problem)


def _compile(ftype: Any, logical: str | None = None) -> Converter:
    """The checker-converter of one Avro type, built once per field: at the intake's rates the
    type's dispatch per value cost more than the check itself (docs/performance.md)."""
    if isinstance(ftype, list):  # union: the contract only uses ["null", T]
        return _union(ftype)
    if isinstance(ftype, dict):
        return _complex(ftype)
    if logical == "timestamp-millis":
        return _required(_time)
    if ftype == "string":
        return _required(_uuid_string if logical == "uuid" else _string)
    if ftype in ("int", "long"):
        return _required(_integer(*(_INT32 if ftype == "int" else _INT64)))
    if ftype == "boolean":
        return _required(lambda v: (v, None) if isinstance(v, bool) else (None, "expected true or false"))
    if ftype in ("float", "double"):
        return _required(lambda v: (None, "expected a number") if isinstance(v, bool) or not isinstance(v, (int, float))
                         else (float(v), None))
    problem = f"unsupported type {ftype}"
    return _required(lambda v: (None, problem))


def _union(ftype: list[Any]) -> Converter:
    nullable = "null" in ftype
    branches = [b for b in ftype if b != "null"]
    inner = _compile(branches[0]) if branches else (lambda v: (None, "unsupported union"))

    def convert(value: Any) -> tuple[Any, str | None]:
        if value is None:
            return (None, None) if nullable else (None, "must not be null")
        return inner(value)
    return convert


def _complex(ftype: dict[str, Any]) -> Converter:
    kind = ftype.get("type")
    if kind == "enum":
        symbols = frozenset(ftype["symbols"])
        problem = f"must be one of {', '.join(ftype['symbols'])}"
        return lambda v: (v, None) if isinstance(v, str) and v in symbols else (None, problem)
    if kind == "array":
        item = _compile(ftype["items"])

        def array(value: Any) -> tuple[Any, str | None]:
            if not isinstance(value, list):
                return None, "expected an array"
            out = []
            for i, each in enumerate(value):
                converted, problem = item(each)
                if problem:
                    return None, f"item {i}: {problem}"
                out.append(converted)
            return out, None
        return array
    if kind == "record":
        return lambda v: (None, "nested records are not accepted in input events")
    return _compile(kind, ftype.get("logicalType"))


def _required(convert: Converter) -> Converter:
    return lambda v: (None, "is required") if v is None else convert(v)


def _time(value: Any) -> tuple[Any, str | None]:
    parsed = _parse_time(value)
    return (parsed, None) if isinstance(parsed, int) else (None, parsed)


def _string(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, str):
        return None, "expected a string"
    if len(value) > MAX_STRING:
        return None, f"longer than {MAX_STRING} characters"
    if (problem := text_problem(value)) is not None:
        return None, problem
    return value, None


def _uuid_string(value: Any) -> tuple[Any, str | None]:
    converted, problem = _string(value)
    if problem is None:
        try:
            uuid.UUID(value)
        except ValueError:
            return None, "not a UUID"
    return converted, problem


def _integer(low: int, high: int) -> Converter:
    def integer(value: Any) -> tuple[Any, str | None]:
        if isinstance(value, bool) or not isinstance(value, int):
            return None, "expected an integer"
        if not low <= value <= high:
            return None, "out of range"
        return value, None
    return integer


_NO_DEFAULT = object()


def _fields(record: RecordType) -> tuple[tuple[str, Converter, Any], ...]:
    """(name, converter, default or _NO_DEFAULT) of each field, compiled once per record type (kept
    on the instance: two catalogs may hold records of one name with different schemas)."""
    compiled = record.__dict__.get("_json_fields")
    if compiled is None:
        compiled = tuple((f["name"], _compile(f["type"]), f.get("default", _NO_DEFAULT)) for f in record.fields)
        record.__dict__["_json_fields"] = compiled
    return compiled


def from_json(obj: Any, catalog: Catalog | None = None, not_after_ms: int | None = None
              ) -> tuple[RecordType, dict[str, Any]]:
    """Validate one flat JSON event; raise ValidationFailed with one FieldError per bad field.
    ``not_after_ms``: the latest plausible ``occurred_at`` (now plus the allowed clock skew)."""
    catalog = catalog or load_catalog()
    if not isinstance(obj, dict):
        raise ValidationFailed([FieldError("$", "an event must be a JSON object")])
    event_type = obj.get("event_type")
    if not isinstance(event_type, str):
        raise ValidationFailed([FieldError("event_type", "is required")])
    record = catalog.by_event_type(event_type)
    if record is None:
        raise ValidationFailed([FieldError("event_type", "unknown event type")])
    errors: list[FieldError] = []
    value: dict[str, Any] = {}
    fields = _fields(record)
    present = 0
    for name, convert, default in fields:
        if name in obj:
            present += 1
        else:
            if default is not _NO_DEFAULT:
                value[name] = default
                continue
            errors.append(FieldError(name, "is required"))
            continue
        converted, problem = convert(obj[name])
        if problem:
            errors.append(FieldError(name, problem))
        else:
            value[name] = converted
    if present != len(obj):  # a name no field has
        known = {name for name, _, _ in fields}
        errors.extend(FieldError(str(name)[:64], f"unknown field for {event_type}")
                      for name in obj if name not in known)
    if not errors:
        errors.extend(_rules(record, value, not_after_ms))
    if errors:
        raise ValidationFailed(errors)
    return record, value


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _rules(record: RecordType, value: dict[str, Any], not_after_ms: int | None = None) -> list[FieldError]:
    errors = []
    occurred = value.get("occurred_at")
    if isinstance(occurred, int) and occurred < EARLIEST_MS:
        errors.append(FieldError("occurred_at", "before 2000-01-01: not a time this pipeline can have seen"))
    if isinstance(occurred, int) and occurred >= LATEST_MS:
        errors.append(FieldError("occurred_at", "from 2200-01-01 on: not a time this pipeline can have seen"))
    elif isinstance(occurred, int) and not_after_ms is not None and occurred > not_after_ms:
        errors.append(FieldError("occurred_at", "in the future beyond the allowed clock skew"))
    if value.get("event_type") != record.event_type:
        errors.append(FieldError("event_type", f"does not match record {record.short_name}"))
    try:
        uuid.UUID(str(value.get("event_id")))
    except ValueError:
        errors.append(FieldError("event_id", "not a UUID"))
    notice = value.get("notice_hash")
    if notice is not None and not _SHA256_HEX.fullmatch(str(notice)):
        errors.append(FieldError("notice_hash", "64 lower-case hex digits expected (the SHA-256 of the notice shown)"))
    rule = SUBJECT_RULE.get(record.topic)
    if rule in ("account_id", "visitor_id") and not value.get(rule):
        errors.append(FieldError(rule, f"is required on {record.topic}"))
    if rule == "either" and not (value.get("account_id") or value.get("visitor_id")):
        errors.append(FieldError("account_id", "account_id or visitor_id is required"))
    return errors


def check_event(record: RecordType, value: dict[str, Any], not_after_ms: int | None = None) -> None:
    """Rules for a decoded input event; raise InvalidEvent naming the fields."""
    errors = _rules(record, value, not_after_ms)
    if errors:
        raise InvalidEvent(errors)


def subject_key(record: RecordType, value: dict[str, Any]) -> str:
    """The partitioning key of an input event: its account, else its visitor."""
    if SUBJECT_RULE.get(record.topic) == "visitor_id":
        return str(value["visitor_id"])
    return str(value.get("account_id") or value.get("visitor_id"))
