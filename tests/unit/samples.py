"""A valid sample value for every record type, built from the schema itself."""

from __future__ import annotations

import uuid
from typing import Any

from lifecycle.schemas.catalog import RecordType

PII = {
    "email": "marie.curie.seed@example.org",
    "first_name": "Mariesentinel",
    "last_name": "Curiesentinel",
    "phone": "+33612345678",
    "ip": "198.51.100.77",
}


def _sample(ftype: Any, name: str) -> Any:
    if isinstance(ftype, list):
        return _sample([t for t in ftype if t != "null"][0], name)
    if isinstance(ftype, dict):
        kind = ftype["type"]
        if kind == "enum":
            return ftype["symbols"][0]
        if kind == "array":
            return [_sample(ftype["items"], name)]
        if kind == "record":
            return {f["name"]: _sample(f["type"], f["name"]) for f in ftype["fields"]}
        return _sample(kind, name)
    return {
        "string": PII.get(name, f"{name}-value"),
        "long": 1_767_225_600_000,
        "int": 7,
        "boolean": True,
        "bytes": b"\x00\x01raw",
        "double": 1.5,
    }[ftype]


def sample(record: RecordType) -> dict[str, Any]:
    value = {f["name"]: _sample(f["type"], f["name"]) for f in record.fields}
    if record.is_input:
        value["event_id"] = str(uuid.uuid4())
        value["event_type"] = record.event_type
        if record.topic == "analytics-events":
            value["visitor_id"] = "vis-1"
        else:
            value["account_id"] = "acc-1"
    return value
