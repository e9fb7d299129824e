"""What a feature's HTTP view stands on (its ``Feature.pages``, streams/runtime/feature.py): the
limits, the shape of a problem, identifiers parsed strictly, and the few services a feature's view
reaches. The service itself (auth, the route table, probes, ingestion) is streams/http/."""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, ClassVar

from faust.web import View

from lifecycle.core.timeutil import ms_to_dt
from lifecycle.schemas.validate import text_problem
from lifecycle.streams.runtime.context import PipelineContext
from lifecycle.streams.runtime.database import Database, describe

__all__ = ["HTTP_REASONS", "KID", "MAX_BATCH", "MAX_BODY_BYTES", "ViewServices", "WebView", "id_problem", "iso",
           "problem"]

log = logging.getLogger("lifecycle.http")
MAX_BODY_BYTES = 1 << 20
MAX_BATCH = 1000
HTTP_REASONS = ("unauthorized", "too_large", "invalid_json", "invalid_event", "database_unavailable", "draining")
KID = re.compile(r"[A-Za-z0-9_-]{22}")  # 16 bytes, base64url without padding (docs/protocol.md)


@dataclasses.dataclass
class ViewServices:
    """One per worker. Each database is its own pool: reads run as the `reader` role, which can do
    nothing else; a view that writes (opening an access request) uses the worker's role."""

    context: PipelineContext
    reader_db: Database
    writer_db: Database


class WebView(View):
    """A view bound to this worker's services when the worker registers it (streams/http/views.py)."""

    services: ClassVar[ViewServices]

    def unavailable(self, what: str, exc: BaseException) -> Any:
        log.warning("%s could not reach PostgreSQL: %s", what, describe(exc))
        return self.json({"error": "database unavailable"}, status=503)

    def refuse(self, status: int, errors: list[dict[str, Any]], **kwargs: Any) -> Any:
        return self.json({"errors": errors}, status=status, **kwargs)


def problem(index: int | None, field: str, what: str) -> dict[str, Any]:
    return {"index": index, "field": field, "problem": what}


def id_problem(value: str) -> str | None:
    """Why an identifier from a path cannot be one (parsed here, never passed on to the database)."""
    if not 0 < len(value) <= 256:
        return "1 to 256 characters"
    if not value.isprintable():
        return "contains a control character"
    return text_problem(value)


def iso(ms: int) -> str:
    return ms_to_dt(ms).isoformat().replace("+00:00", "Z") if ms is not None else ""
