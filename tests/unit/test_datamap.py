"""The data map in the schemas (issue 14): every field that looks personal is marked, every mark
names a category of deploy/retention.yaml, and only strings are marked (their sealed form is a
string in the same field)."""

from __future__ import annotations

import json

import pytest

from lifecycle.core.config import Settings
from lifecycle.core.policy import load_policy
from lifecycle.schemas.catalog import SCHEMA_DIR, load_catalog
from lifecycle.schemas.personal import ANNOTATION, LOOKS_PERSONAL, datamap


def _fields():
    for path in sorted((SCHEMA_DIR / "avro").glob("*.avsc")):
        schema = json.loads(path.read_text())
        yield from ((path.name, f) for f in schema["fields"])


def _is_string(ftype) -> bool:
    if isinstance(ftype, list):
        return all(t in ("null", "string") for t in ftype) and "string" in ftype
    if isinstance(ftype, dict):
        return ftype.get("type") == "string"
    return ftype == "string"


def test_every_field_that_looks_personal_is_marked():
    missing = [f"{name}: {f['name']}" for name, f in _fields() if _is_string(f["type"])
               and (LOOKS_PERSONAL.search(f["name"]) or LOOKS_PERSONAL.search(f.get("doc", "")))
               and ANNOTATION not in f]
    assert missing == []


def test_marks_name_known_categories_and_only_strings():
    categories = set(load_policy(Settings().retention_policy).categories)
    problems = []
    for name, f in _fields():
        mark = f.get(ANNOTATION)
        if mark is None:
            continue
        if mark is False:
            if not f.get("doc"):
                problems.append(f"{name}: {f['name']} marked not personal without a doc saying why")
        elif mark not in categories:
            problems.append(f"{name}: {f['name']} names unknown category {mark!r}")
        elif not _is_string(f["type"]):
            problems.append(f"{name}: {f['name']} is not a string and cannot be sealed")
    assert problems == []


@pytest.mark.parametrize("field", ["email", "phone", "first_name", "ip", "user_agent", "referrer_domain", "path"])
def test_the_heuristic_sees_the_usual_names(field):
    assert LOOKS_PERSONAL.search(field)


def test_the_map_lists_the_seeded_fields_with_their_retention():
    rows = datamap(load_catalog(), load_policy(Settings().retention_policy))
    by = {(r["record"], r["field"]): r for r in rows}
    assert by[("AccountRegistered", "email")]["category"] == "account_profile"
    assert by[("SessionLog", "ip")]["retention"] == "12 months from event time"
    assert ("TrafficAggregate", "referrer_domain") not in by
    assert {r["topic"] for r in rows} >= {"account-events", "accounts", "session-events", "session-logs"}
