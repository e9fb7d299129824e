"""What the service's own views share (probes, ingestion, the key service): the worker's pipeline
and its dedicated databases, on top of what a feature's view has (streams/runtime/web.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from lifecycle.core.pgroles import component_dsn
from lifecycle.streams.http.ingestion import Ingestion
from lifecycle.streams.http.openapi import document_bytes
from lifecycle.streams.runtime.database import Database
from lifecycle.streams.runtime.sending import batched
from lifecycle.streams.runtime.web import (
    HTTP_REASONS,
    KID,
    MAX_BATCH,
    MAX_BODY_BYTES,
    ViewServices,
    WebView,
    id_problem,
    iso,
    problem,
)

if TYPE_CHECKING:
    from lifecycle.streams.pipeline import Pipeline

__all__ = ["HTTP_REASONS", "KID", "MAX_BATCH", "MAX_BODY_BYTES", "ServiceView", "Services", "bind", "id_problem",
           "iso", "problem"]


@dataclasses.dataclass
class Services(ViewServices):
    """One per worker. The journal has one connection, its transactions one at a time."""

    pipeline: Pipeline
    keys_db: Database
    ingestion: Ingestion  # POST /v1/events, with the journal's one connection
    draining: Path  # written by `up` on Ctrl-C (lifecycle/supervisor.py): POST answers 503
    children: Path  # written by `up`: the children it reports failing
    openapi: bytes  # streams/http/openapi.py: the route table's document, with this worker's categories
    seen_failing: set[str] = dataclasses.field(default_factory=set)

    @classmethod
    def of(cls, pipeline: Pipeline) -> Services:
        settings = pipeline.settings
        dsn = settings.postgres_dsn or ""
        run = settings.state_dir / "run"
        draining = run / "draining"
        metrics = pipeline.metrics
        ingestion = Ingestion(settings, pipeline.codec, pipeline.clock, pipeline.context.data_keys, Database(dsn),
                              batched(pipeline.app.kafka_producer),
                              rejected=lambda reason: metrics.events_rejected.labels("http", reason).inc(),
                              too_slow=lambda: metrics.http_refused.labels("too_slow").inc(),
                              draining=draining.exists)
        return cls(pipeline.context, Database(component_dsn(settings, "reader")), Database(dsn),
                   pipeline, Database(dsn), ingestion, draining, run / "children.json",
                   document_bytes(pipeline.codec.catalog, list(pipeline.context.policy.categories)))


class ServiceView(WebView):
    services: ClassVar[Services]


def bind(view: type[WebView], services: ViewServices) -> type[WebView]:
    """The view class a worker registers: ``view`` with this worker's services."""
    return type(view.__name__, (view,), {"services": services, "__doc__": view.__doc__})
