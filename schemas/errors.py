"""Why a record could not be read or accepted.

Each failure has its own class and a stable ``reason`` code; dead letters and HTTP answers carry
the code and a message built here from positions, ids and field names only, never from the
record's values, so personal data cannot leak through an error.
"""

from __future__ import annotations

import dataclasses

from lifecycle.core.errors import LifecycleError, TransientError

__all__ = [
    "DecodeError",
    "NotConfluentFramed",
    "UnknownSchemaId",
    "TruncatedRecord",
    "SchemaMismatch",
    "SchemaNotAllowed",
    "InvalidEvent",
    "FieldError",
    "ValidationFailed",
    "RegistryError",
]


class DecodeError(LifecycleError):
    """Bytes that are not a readable record of ours."""

    reason = "undecodable"


class NotConfluentFramed(DecodeError):
    """Missing or wrong magic byte / header."""

    reason = "not_confluent_framed"


class UnknownSchemaId(DecodeError):
    """The schema id in the header is known to no registry we can reach."""

    reason = "unknown_schema_id"


class TruncatedRecord(DecodeError):
    """The Avro body ended early, has trailing bytes, or is otherwise malformed."""

    reason = "malformed_avro"


class SchemaMismatch(DecodeError):
    """The writer schema cannot be resolved to the reader schema of the same record."""

    reason = "schema_mismatch"


class SchemaNotAllowed(DecodeError):
    """A well-formed record of a type that does not belong on this topic."""

    reason = "schema_not_allowed_on_topic"


class RegistryError(TransientError):
    """The schema registry could not be reached or refused a schema."""


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One problem with one field: ``field`` is the field name, ``problem`` says what is wrong."""

    field: str
    problem: str


class InvalidEvent(DecodeError):
    """A decoded record that breaks the contract's rules (envelope, key, event type)."""

    reason = "invalid_event"

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.problem}" for e in errors))


class ValidationFailed(LifecycleError):
    """A JSON event that cannot become an Avro record; one ``FieldError`` per bad field."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.problem}" for e in errors))
