"""HTTP on one port, served by every worker: probes, event ingestion, the key service, an
account's erasures and access archive, consent. One module per resource, each with its ``PAGES``;
every path is a row of the route table (streams/http/routes.py), whose auth middleware checks
tokens, scopes and body limits before these views run (streams/http/auth.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lifecycle.streams.http import accounts, consent, events, keys, probes
from lifecycle.streams.http.common import HTTP_REASONS, MAX_BATCH, MAX_BODY_BYTES, Services, ServiceView, bind

if TYPE_CHECKING:
    from lifecycle.streams.pipeline import Pipeline

__all__ = ["MAX_BATCH", "MAX_BODY_BYTES", "PAGES", "register_views"]

PAGES: dict[str, type[ServiceView]] = {**probes.PAGES, **events.PAGES, **keys.PAGES, **accounts.PAGES,
                                       **consent.PAGES}


def register_views(pipeline: Pipeline) -> None:
    for reason in HTTP_REASONS:  # every refusal's series exists from the start
        pipeline.metrics.events_rejected.labels("http", reason)
    services = Services.of(pipeline)
    for path, view in PAGES.items():
        pipeline.app.page(path)(bind(view, services))
