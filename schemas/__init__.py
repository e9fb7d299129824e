"""Event contracts: the Avro schemas, their catalog, the Confluent wire-format codec and registries.

Current schemas live in ``schemas/avro/``; every released version is kept in
``schemas/released/NAME.vN.avsc`` so compatibility can be proven against it.
"""

from lifecycle.schemas.catalog import Catalog, RecordType, load_catalog
from lifecycle.schemas.codec import Codec, Decoded
from lifecycle.schemas.errors import (
    DecodeError,
    FieldError,
    NotConfluentFramed,
    SchemaMismatch,
    SchemaNotAllowed,
    TruncatedRecord,
    UnknownSchemaId,
    ValidationFailed,
)
from lifecycle.schemas.registry import BuiltinRegistry, ConfluentRegistry, Registry, make_registry

__all__ = [
    "BuiltinRegistry",
    "Catalog",
    "Codec",
    "ConfluentRegistry",
    "DecodeError",
    "Decoded",
    "FieldError",
    "NotConfluentFramed",
    "RecordType",
    "Registry",
    "SchemaMismatch",
    "SchemaNotAllowed",
    "TruncatedRecord",
    "UnknownSchemaId",
    "ValidationFailed",
    "load_catalog",
    "make_registry",
]
