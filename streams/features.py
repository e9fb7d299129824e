"""The capabilities the pipeline runs, each joined through its ``Feature`` (streams/runtime/feature.py,
docs/architecture.md "How to add a capability"). The order is the order of their ticks and, on
`erasure-acks`, of the answers applied in a batch."""

from collections.abc import Awaitable, Callable
from typing import Any

from lifecycle.streams import access, accounts, consent, erasure, ingest, retention, sessions, traffic
from lifecycle.streams.runtime.context import PipelineContext
from lifecycle.streams.runtime.feature import AnswerKind, Feature, Tick
from lifecycle.streams.runtime.processor import Processor

__all__ = ["FEATURES", "all_processors", "answer_kinds", "ticks"]

FEATURES: tuple[Feature, ...] = (ingest.FEATURE, accounts.FEATURE, sessions.FEATURE, consent.FEATURE, traffic.FEATURE,
                                 erasure.FEATURE, access.FEATURE, retention.FEATURE)


def all_processors() -> list[Processor]:
    """One processor per input topic (docs/processors.md)."""
    return [p for feature in FEATURES for p in feature.processors]


def answer_kinds() -> list[AnswerKind]:
    return [kind for feature in FEATURES for kind in feature.answers]


def ticks() -> list[Tick]:
    """Every processor's tick, then the features' own."""
    return [Tick(f"tick {p.topic}", _processor_tick(p)) for p in all_processors()] + \
        [tick for feature in FEATURES for tick in feature.ticks]


def _processor_tick(processor: Processor) -> Callable[[Any, PipelineContext, int], Awaitable[Any]]:
    async def run(conn: Any, ctx: PipelineContext, now_ms: int) -> None:
        await processor.tick(conn, now_ms, ctx)
    return run
