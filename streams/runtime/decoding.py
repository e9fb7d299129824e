"""Intake: every record from an input topic is decoded and checked here, once.

Bad records become data, not crashes: a ``Rejected`` that turns into a dead letter
(schemas/deadletters.py, re-exported here for the pipeline's stages).
"""

from __future__ import annotations

from lifecycle.schemas.codec import Codec, Decoded
from lifecycle.schemas.deadletters import (
    DEAD_LETTER_VALUE_CAP,
    DLQ_HEADER_PREFIX,
    Origin,
    Rejected,
    capped,
    dead_letter,
)
from lifecycle.schemas.errors import DecodeError
from lifecycle.schemas.validate import check_event

__all__ = ["Origin", "Rejected", "triage", "dead_letter", "capped", "DLQ_HEADER_PREFIX", "DEAD_LETTER_VALUE_CAP"]


def triage(codec: Codec, topic: str, value: bytes | None, not_after_ms: int | None = None) -> Decoded | Rejected:
    """Decode and check one input record from contract topic ``topic`` (unprefixed)."""
    try:
        decoded = codec.decode(value, topic=topic)
        check_event(decoded.record, decoded.value, not_after_ms)
        return decoded
    except DecodeError as exc:
        return Rejected(reason=exc.reason, error_class=type(exc).__name__, message=str(exc))
