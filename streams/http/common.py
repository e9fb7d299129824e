"""What every view of the HTTP service shares: the limits, the shape of a problem, identifiers parsed
strictly, and the services a view reaches (bound to its class when the worker registers it)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from faust.web import View

from lifecycle.core.pgroles import component_dsn
from lifecycle.core.timeutil import ms_to_dt
from lifecycle.schemas.validate import text_problem
from lifecycle.streams.http.openapi import document_bytes
from lifecycle.streams.runtime.database import Database, describe

if TYPE_CHECKING:
    from lifecycle.streams.pipeline import Pipeline

__all__ = ["HTTP_REASONS", "KID", "MAX_BATCH", "MAX_BODY_BYTES", "ServiceView", "Services", "bind", "id_problem",
           "iso", "problem"]

log = logging.getLogger("lifecycle.http")
MAX_BODY_BYTES = 1 << 20
MAX_BATCH = 1000
HTTP_REASONS = ("unauthorized", "too_large", "invalid_json", "invalid_event", "database_unavailable", "draining")
KID = re.compile(r"[A-Za-z0-9_-]{22}")  # 16 bytes, base64url without padding (docs/protocol.md)


@dataclasses.dataclass
class Services:
    """One per worker. Each database is its own pool: reads run as the `reader` role, which can do
    nothing else; the journal has one connection, its transactions one at a time."""

    pipeline: Pipeline
    reader_db: Database
    journal_db: Database
    keys_db: Database
    access_db: Database  # opening an access request writes: the worker's role
    journal_lock: asyncio.Lock
    draining: Path  # written by `up` on Ctrl-C (lifecycle/supervisor.py): POST answers 503
    children: Path  # written by `up`: the children it reports failing
    openapi: bytes  # streams/http/openapi.py: the route table's document, with this worker's categories
    seen_failing: set[str] = dataclasses.field(default_factory=set)

    @classmethod
    def of(cls, pipeline: Pipeline) -> Services:
        settings = pipeline.settings
        dsn = settings.postgres_dsn or ""
        run = settings.state_dir / "run"
        return cls(pipeline, Database(component_dsn(settings, "reader")), Database(dsn), Database(dsn),
                   Database(dsn), asyncio.Lock(), run / "draining", run / "children.json",
                   document_bytes(pipeline.codec.catalog, list(pipeline.context.policy.categories)))


class ServiceView(View):
    services: ClassVar[Services]

    def unavailable(self, what: str, exc: BaseException) -> Any:
        log.warning("%s could not reach PostgreSQL: %s", what, describe(exc))
        return self.json({"error": "database unavailable"}, status=503)

    def refuse(self, status: int, errors: list[dict[str, Any]], **kwargs: Any) -> Any:
        return self.json({"errors": errors}, status=status, **kwargs)


def bind(view: type[ServiceView], services: Services) -> type[ServiceView]:
    """The view class a worker registers: ``view`` with this worker's services."""
    return type(view.__name__, (view,), {"services": services, "__doc__": view.__doc__})


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
