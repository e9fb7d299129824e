"""Schema registries: where a schema id in a record header is resolved.

``BuiltinRegistry`` serves the schemas in this repository with stable fingerprint ids and needs
no server. ``ConfluentRegistry`` speaks the Confluent Schema Registry REST API (used when
``LIFECYCLE_SCHEMA_REGISTRY_URL`` is set) with the TopicRecordNameStrategy subject
``<topic>-<record full name>``, because one topic carries several record types.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any, Protocol

from lifecycle.schemas.catalog import Catalog, legacy_schema_id, load_catalog, schema_id
from lifecycle.schemas.errors import RegistryError, UnknownSchemaId

__all__ = ["Registry", "BuiltinRegistry", "ConfluentRegistry", "make_registry"]


class Registry(Protocol):
    """Resolve schemas to ids (for writing) and ids to schemas (for reading)."""

    def id_for(self, schema: dict[str, Any], subject: str) -> int: ...

    def schema_for(self, schema_id: int) -> dict[str, Any]: ...


class BuiltinRegistry:
    """Schemas from the repository (current and released), ids derived from their fingerprints.
    Records are written with ``schema_id``; the ids of before issue 27 (``legacy_schema_id``) are
    still read, so nothing already on a topic, in the journal or in a dead letter becomes unreadable."""

    def __init__(self, catalog: Catalog | None = None):
        catalog = catalog or load_catalog()
        self._by_id: dict[int, dict[str, Any]] = {}
        for schema in catalog.all_schemas():
            self._by_id.setdefault(schema_id(schema), schema)
        for schema in catalog.all_schemas():
            self._by_id.setdefault(legacy_schema_id(schema), schema)

    def id_for(self, schema: dict[str, Any], subject: str) -> int:
        sid = schema_id(schema)
        self._by_id.setdefault(sid, schema)
        return sid

    def schema_for(self, sid: int) -> dict[str, Any]:
        try:
            return self._by_id[sid]
        except KeyError:
            raise UnknownSchemaId(f"schema id {sid} is not in the built-in registry") from None


class ConfluentRegistry:
    """A client for a Confluent-compatible Schema Registry over HTTP, with a local cache."""

    def __init__(self, url: str, *, timeout_s: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RegistryError(f"schema registry answered {exc.code} to {method} {path}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise RegistryError(f"schema registry unreachable for {method} {path}") from exc

    def id_for(self, schema: dict[str, Any], subject: str) -> int:
        text = json.dumps(schema, sort_keys=True)
        with self._lock:
            cached = self._ids.get((subject, text))
        if cached is not None:
            return cached
        answer = self._call("POST", f"/subjects/{subject}/versions", {"schema": text})
        sid = int(answer["id"])
        with self._lock:
            self._ids[(subject, text)] = sid
            self._schemas[sid] = schema
        return sid

    def schema_for(self, sid: int) -> dict[str, Any]:
        with self._lock:
            cached = self._schemas.get(sid)
        if cached is not None:
            return cached
        try:
            answer = self._call("GET", f"/schemas/ids/{sid}")
        except RegistryError as exc:
            if isinstance(exc.__cause__, urllib.error.HTTPError) and exc.__cause__.code == 404:
                raise UnknownSchemaId(f"schema id {sid} is not in the schema registry") from None
            raise
        schema = json.loads(answer["schema"])
        with self._lock:
            self._schemas[sid] = schema
        return dict(schema)


def make_registry(url: str | None, catalog: Catalog | None = None) -> Registry:
    """The Confluent client when a URL is configured, else the built-in registry."""
    return ConfluentRegistry(url) if url else BuiltinRegistry(catalog)
