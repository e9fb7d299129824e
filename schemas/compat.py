"""Schema evolution checks, with the ``avro`` package's reader/writer compatibility checker.

The contract asks for BACKWARD compatibility (a new reader reads old data). We also check the
other direction against the previous release, so that downstream stores written by other teams,
which read with an older schema, can still read what we write (together: FULL). Removing a
field that has no default breaks that second direction and is refused.
"""

from __future__ import annotations

import json
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from lifecycle.schemas.catalog import Catalog

__all__ = ["can_read", "check_catalog"]


def can_read(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    """True when data written with ``writer`` can be read with ``reader``."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(  # type: ignore[no-untyped-call]
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )
    return result.compatibility is SchemaCompatibilityType.compatible


def check_catalog(catalog: Catalog) -> list[str]:
    """Problems found: each current schema against every released version of it."""
    problems = []
    for record in catalog.records:
        versions = catalog.released.get(record.short_name)
        if not versions:
            problems.append(f"{record.short_name}: no released version in schemas/released/")
            continue
        for number, old in enumerate(versions, start=1):
            if not can_read(record.schema, old):
                problems.append(f"{record.short_name}: cannot read data written with v{number}")
        if not can_read(versions[-1], record.schema):
            problems.append(
                f"{record.short_name}: v{len(versions)} readers cannot read the current schema"
            )
    return problems
