"""Schema ids any Avro library computes from the specification (issue 27): the built-in registry's
id is the Avro specification's CRC-64-AVRO fingerprint of the Parsing Canonical Form, as a number
(Java's ``parsingFingerprint64``), folded to 31 bits. Before, the fingerprint's little-endian bytes
were read as a big-endian number, which no library gives; those ids are still read, never written."""

from __future__ import annotations

import json

import avro.schema

from lifecycle.schemas import Codec
from lifecycle.schemas.catalog import legacy_schema_id, load_catalog, plain_schema, schema_id
from lifecycle.schemas.registry import BuiltinRegistry


def _fold(v: int) -> int:
    return ((v ^ (v >> 31) ^ (v >> 62)) & 0x7FFFFFFF) or 1


def test_the_rule_matches_the_specifications_own_fingerprint():
    # The specification's example: the 64-bit fingerprint of "int" is 0x7275d51a3f395c8f.
    assert schema_id("int") == _fold(0x7275D51A3F395C8F)


def test_every_schema_id_is_what_the_reference_avro_package_computes():
    schemas = list(load_catalog().all_schemas())
    assert len(schemas) > 40
    for schema in schemas:
        # Logical types take no part in the canonical form; the avro package keeps {"type": "long"}
        # for them where the specification (and Java) write "long", so they are left out first.
        fingerprint = avro.schema.parse(json.dumps(plain_schema(schema))).fingerprint("CRC-64-AVRO")
        assert schema_id(schema) == _fold(int.from_bytes(fingerprint, "little")), schema.get("name")


def test_records_are_written_with_the_new_ids_and_those_of_before_still_read():
    codec = Codec()
    record = load_catalog().by_name("ErasureAck")
    value = {"request_id": "00000000-0000-4000-8000-000000000001", "account_id": None, "store": "crm",
             "status": "erased", "items_erased": 1, "completed_at": 0, "error": None}
    framed = codec.encode("ErasureAck", value)
    assert int.from_bytes(framed[1:5], "big") == schema_id(record.schema) != legacy_schema_id(record.schema)
    before = framed[:1] + legacy_schema_id(record.schema).to_bytes(4, "big") + framed[5:]
    assert codec.decode(before, topic="erasure-acks").value["store"] == "crm"
    registry = BuiltinRegistry()
    assert registry.schema_for(legacy_schema_id(record.schema)) == registry.schema_for(schema_id(record.schema))


def test_no_id_of_before_names_another_schema_now():
    by_new, by_old = {}, {}
    for schema in load_catalog().all_schemas():
        canonical = json.dumps(plain_schema(schema), sort_keys=True)
        by_new[schema_id(schema)] = canonical
        by_old[legacy_schema_id(schema)] = canonical
    assert [sid for sid in by_new.keys() & by_old.keys() if by_new[sid] != by_old[sid]] == []
