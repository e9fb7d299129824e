import copy

from lifecycle.schemas.catalog import Catalog, RecordType, load_catalog
from lifecycle.schemas.compat import can_read, check_catalog


def _with_current(schema):
    base = load_catalog()
    records = [r for r in base.records if r.short_name != schema["name"]]
    records.append(RecordType(name=f"{schema['namespace']}.{schema['name']}", topic=schema["lifecycle.topic"],
                              event_type=schema.get("lifecycle.event_type"), schema=schema))
    return Catalog(records, base.released)


def _current(name):
    return copy.deepcopy(load_catalog().by_name(name).schema)


def test_every_schema_is_compatible_with_its_released_versions():
    assert check_catalog(load_catalog()) == []


def test_removing_a_field_without_default_is_refused():
    schema = _current("SessionStarted")
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "session_id"]
    problems = check_catalog(_with_current(schema))
    assert any("SessionStarted" in p for p in problems)


def test_adding_a_field_without_default_is_refused():
    schema = _current("SessionStarted")
    schema["fields"].append({"name": "tenant", "type": "string"})
    problems = check_catalog(_with_current(schema))
    assert any("cannot read data written with v1" in p for p in problems)


def test_adding_an_optional_field_with_default_is_accepted():
    schema = _current("SessionStarted")
    schema["fields"].append({"name": "tenant", "type": ["null", "string"], "default": None})
    assert check_catalog(_with_current(schema)) == []


def test_changing_a_type_is_refused():
    schema = _current("SessionFileTransferred")
    for f in schema["fields"]:
        if f["name"] == "size_bytes":
            f["type"] = "string"
    assert not can_read(schema, load_catalog().released["SessionFileTransferred"][-1])
