"""The acknowledgement statuses of the erasure protocol (docs/protocol.md, "Running a store"), as one enum.

The Avro enum `lifecycle.types.AckStatus` in ErasureAck.avsc is the contract; this mirrors it for
code (tests/unit/test_catalog.py fails when the two differ)."""

from __future__ import annotations

import enum

__all__ = ["AckStatus", "SUCCESS"]


class AckStatus(enum.StrEnum):
    ERASED = "erased"
    NOTHING_FOUND = "nothing_found"
    RETAINED_LEGAL_HOLD = "retained_legal_hold"
    FAILED = "failed"


# What completes a store's part of an erasure.
SUCCESS = frozenset({AckStatus.ERASED, AckStatus.NOTHING_FOUND, AckStatus.RETAINED_LEGAL_HOLD})
