"""Dead letters: every record that cannot be processed becomes data, not a crash. A ``Rejected``
turns into a DeadLetter record carrying the reason code, the origin (topic, partition, offset) and
the original key and bytes, with Kafka Connect-style headers. Nothing in a dead letter's headers
or reason comes from the record's values. Shared by the pipeline (streams/) and the stores'
connectors (connectors/), which sit side by side above this layer."""

from __future__ import annotations

import dataclasses
from typing import Any

from lifecycle.schemas.codec import Codec

__all__ = ["Origin", "Rejected", "dead_letter", "capped", "DLQ_HEADER_PREFIX", "DEAD_LETTER_VALUE_CAP"]

DLQ_HEADER_PREFIX = "lifecycle.dlq."
# A dead letter copies the original bytes only up to this size: a larger copy could itself be over
# the producer's limit and block the partition it came from. The original stays at its origin
# (topic, partition, offset) until that topic's retention.
DEAD_LETTER_VALUE_CAP = 512 * 1024


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a record was read: the full topic name, partition, offset, timestamp, key."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None


@dataclasses.dataclass(frozen=True)
class Rejected:
    """Why a record could not be processed."""

    reason: str
    error_class: str
    message: str
    stage: str = "intake"


def capped(value: bytes | None) -> bytes | None:
    """The original bytes a dead letter copies: none over DEAD_LETTER_VALUE_CAP."""
    return value if value is None or len(value) <= DEAD_LETTER_VALUE_CAP else None


def dead_letter(
    codec: Codec, rejected: Rejected, origin: Origin, value: bytes | None, now_ms: int, *,
    original_size: int | None = None, sealed_for: str | None = None,
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of the dead letter for a rejected record: keyed by the original key,
    the value a DeadLetter record holding the original bytes (up to DEAD_LETTER_VALUE_CAP), sealed
    (streams/runtime/sealing.py) when ``sealed_for`` says under which subject's key."""
    message = rejected.message
    size = len(value) if original_size is None and value is not None else original_size or 0
    if size > DEAD_LETTER_VALUE_CAP:
        message += f" (original value of {size} bytes not copied: over {DEAD_LETTER_VALUE_CAP}; see its origin)"
        value = None
    record: dict[str, Any] = {
        "reason": f"{rejected.reason}: {message}",
        "error_class": rejected.error_class,
        "stage": rejected.stage,
        "original_topic": origin.topic,
        "original_partition": origin.partition,
        "original_offset": origin.offset,
        "original_timestamp": origin.timestamp_ms,
        "original_key": origin.key,
        "original_value": value,
        "failed_at": now_ms,
    }
    headers = [
        (DLQ_HEADER_PREFIX + "topic", origin.topic.encode()),
        (DLQ_HEADER_PREFIX + "partition", str(origin.partition).encode()),
        (DLQ_HEADER_PREFIX + "offset", str(origin.offset).encode()),
        (DLQ_HEADER_PREFIX + "stage", rejected.stage.encode()),
        (DLQ_HEADER_PREFIX + "reason", rejected.reason.encode()),
        (DLQ_HEADER_PREFIX + "exception.class", rejected.error_class.encode()),
        (DLQ_HEADER_PREFIX + "exception.message", rejected.message.encode()),
    ]
    if sealed_for is not None:
        headers.append((DLQ_HEADER_PREFIX + "sealed_for", sealed_for.encode()))
    return origin.key, codec.encode("DeadLetter", record), headers
