"""Contract rules for input events, shared by every entry path (HTTP, SDK, raw topics).

``from_json`` turns one flat JSON object into an Avro-ready value, naming every bad field.
``check_event`` applies the rules a schema cannot express (envelope, event type, subject key),
to values that came from JSON and from the wire alike.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
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


def _convert(ftype: Any, value: Any, logical: str | None = None) -> tuple[Any, str | None]:
    """Check and convert one JSON value against an Avro type; (value, problem)."""
    if isinstance(ftype, list):  # union: the contract only uses ["null", T]
        if value is None:
            if "null" in ftype:
                return None, None
            return None, "must not be null"
        for branch in ftype:
            if branch == "null":
                continue
            return _convert(branch, value)
        return None, "unsupported union"
    if isinstance(ftype, dict):
        kind = ftype.get("type")
        if kind == "enum":
            if not isinstance(value, str) or value not in ftype["symbols"]:
                return None, f"must be one of {', '.join(ftype['symbols'])}"
            return value, None
        if kind == "array":
            if not isinstance(value, list):
                return None, "expected an array"
            out = []
            for i, item in enumerate(value):
                converted, problem = _convert(ftype["items"], item)
                if problem:
                    return None, f"item {i}: {problem}"
                out.append(converted)
            return out, None
        if kind == "record":
            return None, "nested records are not accepted in input events"
        return _convert(kind, value, ftype.get("logicalType"))
    if value is None:
        return None, "is required"
    if logical == "timestamp-millis":
        parsed = _parse_time(value)
        return (parsed, None) if isinstance(parsed, int) else (None, parsed)
    if ftype == "string":
        if not isinstance(value, str):
            return None, "expected a string"
        if len(value) > MAX_STRING:
            return None, f"longer than {MAX_STRING} characters"
        if (problem := text_problem(value)) is not None:
            return None, problem
        if logical == "uuid":
            try:
                uuid.UUID(value)
            except ValueError:
                return None, "not a UUID"
        return value, None
    if ftype in ("int", "long"):
        low, high = _INT32 if ftype == "int" else _INT64
        if isinstance(value, bool) or not isinstance(value, int):
            return None, "expected an integer"
        if not low <= value <= high:
            return None, "out of range"
        return value, None
    if ftype == "boolean":
        if not isinstance(value, bool):
            return None, "expected true or false"
        return value, None
    if ftype in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, "expected a number"
        return float(value), None
    return None, f"unsupported type {ftype}"


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
    known = set()
    for field in record.fields:
        name = field["name"]
        known.add(name)
        if name not in obj:
            if "default" in field:
                value[name] = field["default"]
                continue
            errors.append(FieldError(name, "is required"))
            continue
        converted, problem = _convert(field["type"], obj[name])
        if problem:
            errors.append(FieldError(name, problem))
        else:
            value[name] = converted
    for name in obj:
        if name not in known:
            errors.append(FieldError(str(name)[:64], f"unknown field for {event_type}"))
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
