"""HTTP on one port, served by every worker: probes, event ingestion and the key service (here,
one module per resource), and each feature's own views (its ``Feature.pages``: an account's
erasures and access archive, consent). Every module has its ``PAGES``;
every path is a row of the route table (streams/http/routes.py), whose auth middleware checks
tokens, scopes and body limits before these views run (streams/http/auth.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lifecycle.streams.features import FEATURES
from lifecycle.streams.http import events, keys, probes
from lifecycle.streams.http.common import HTTP_REASONS, MAX_BATCH, MAX_BODY_BYTES, Services, bind
from lifecycle.streams.runtime.web import WebView

if TYPE_CHECKING:
    from lifecycle.streams.pipeline import Pipeline

__all__ = ["MAX_BATCH", "MAX_BODY_BYTES", "PAGES", "register_views"]

PAGES: dict[str, type[WebView]] = {**probes.PAGES, **events.PAGES, **keys.PAGES,
                                   **{path: view for feature in FEATURES for path, view in feature.pages.items()}}


def register_views(pipeline: Pipeline) -> None:
    for reason in HTTP_REASONS:  # every refusal's series exists from the start
        pipeline.metrics.events_rejected.labels("http", reason)
    services = Services.of(pipeline)
    for path, view in PAGES.items():
        pipeline.app.page(path)(bind(view, services))
