"""The one way a capability joins the pipeline (docs/architecture.md, "How to add a capability").

A feature hands the runtime a ``Feature``: the processors that apply its records from the input
topics, the kinds of answer it takes from the stores on `erasure-acks`, its clock-driven ticks, and
its HTTP views (each path also a row of the route table, streams/http/routes.py, for its scope and
its OpenAPI document). Its metrics are series of the one declared catalogue
(streams/runtime/metrics.py, docs/metrics.md): an SRE reads every name in one place.
The runtime runs them all the same way (one transaction each, a failure logged and tried again at
the next tick or batch) and knows no feature by name; streams/features.py lists the features."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg

from lifecycle.streams.runtime.context import PipelineContext
from lifecycle.streams.runtime.processor import Processor
from lifecycle.streams.runtime.web import WebView

__all__ = ["AnswerKind", "Feature", "Tick"]

Connection = psycopg.AsyncConnection[Any]


@dataclasses.dataclass(frozen=True)
class AnswerKind:
    """One kind of store answer on `erasure-acks`, as its feature takes it.

    ``problem`` says why a decoded answer cannot be applied (a field and its problem), or None;
    ``order`` names what the answer's nonce must be bound to (lifecycle/core/orderkeys.py): the
    order's kind and its parts; ``apply`` records a batch of answers that passed both in the
    caller's transaction. ``receipt``: the answer carries the store's signed receipt, checked and
    kept for the certificate (docs/proofs.md)."""

    record: str  # the Avro record's short name (schemas/avro/)
    what: str  # for logs: "erasure acks"
    problem: Callable[[dict[str, Any]], str | None]
    order: Callable[[dict[str, Any]], tuple[Any, ...]]
    apply: Callable[[Connection, PipelineContext, list[dict[str, Any]]], Awaitable[Any]]
    receipt: bool = False


@dataclasses.dataclass(frozen=True)
class Tick:
    """Clock-driven work, run every tick in its own transaction with the policy clock's now (ms)."""

    what: str
    run: Callable[[Connection, PipelineContext, int], Awaitable[Any]]


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    processors: tuple[Processor, ...] = ()
    answers: tuple[AnswerKind, ...] = ()
    ticks: tuple[Tick, ...] = ()
    pages: Mapping[str, type[WebView]] = dataclasses.field(default_factory=dict)  # path -> view
