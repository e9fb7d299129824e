"""The OpenAPI 3.1 document of the worker's HTTP API, built from the route table
(streams/http/routes.py) and, for event bodies, from the Avro schemas (schemas/jsonschema.py):
one source for each. Served at /openapi.json (no token); `lifecycle openapi --out FILE` writes it
(docs/openapi.json)."""

from __future__ import annotations

import json
from typing import Any

from lifecycle.schemas.catalog import Catalog
from lifecycle.schemas.jsonschema import event_schemas
from lifecycle.streams.http.routes import ERRORS, MESSAGE, ROUTES, Route

__all__ = ["document", "document_bytes"]

_VERSION = "1"
# What the middleware answers on every scoped route before the view runs (streams/http/auth.py).
_GUARD = {401: ("no valid bearer token", MESSAGE), 403: ("the token lacks the route's scope", MESSAGE),
          415: ("a Content-Encoding was sent: send the body uncompressed", ERRORS)}
_BUSY = ("too many requests in flight (Retry-After)", MESSAGE)


def _responses(route: Route) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, (what, media, schema) in sorted(route.responses.items()):
        schemas = [schema or {"type": "object"}]
        if status == 503 and route.scope not in (None, "console"):
            what, schemas = f"{what}; or {_BUSY[0]}", [*schemas, _BUSY[1]]
        body = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
        out[str(status)] = {"description": what, "content": {media: {"schema": body}}}
    if route.scope not in (None, "console"):
        for status, (what, schema) in _GUARD.items():
            out.setdefault(str(status), {"description": what, "content": {"application/json": {"schema": schema}}})
        out.setdefault("400", {"description": "a path that is not UTF-8 or holds a control character",
                               "content": {"application/json": {"schema": ERRORS}}})
        out.setdefault("503", {"description": _BUSY[0], "content": {"application/json": {"schema": _BUSY[1]}}})
    return out


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary, "operationId": _operation_id(route),
                          "responses": _responses(route)}
    if route.parameters:
        op["parameters"] = list(route.parameters)
    if route.request is not None:
        op["requestBody"] = {"required": True, "content": {route.request_media: {"schema": route.request}}}
    if route.scope == "console":
        op["security"] = [{"session": []}]
    else:
        op["security"] = [{"bearer": [route.scope]}] if route.scope is not None else []
    if route.scope is not None:
        op["x-lifecycle-scope"] = route.scope
    return op


def _operation_id(route: Route) -> str:
    words = [w.strip("{}") for w in route.path.replace(".", "/").split("/") if w and w != "v1"]
    return route.method.lower() + "".join(w.replace("_", " ").replace("-", " ").title().replace(" ", "") for w in words)


def document(catalog: Catalog, categories: list[str]) -> dict[str, Any]:
    """``categories``: the retention policy's data categories (what a key is asked for)."""
    events = event_schemas(catalog)
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "lifecycle", "version": _VERSION,
                 "description": "The data lifecycle pipeline's HTTP API (docs/protocol.md). Every /v1 route needs a "
                                "bearer token of the scope it names (`x-lifecycle-scope`; scopes: ingest, read, "
                                "keys); the others answer without one. Refusals name the field and the problem, "
                                "never the value."},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "A token of scope ingest (POST /v1/events), read (the account and subject routes) "
                               "or keys (the key service); docs/operations.md says how tokens are issued."},
                "session": {
                "type": "apiKey", "in": "cookie", "name": "lifecycle_console",
                "description": "The console's session (docs/console.md): a read-scope token exchanged at "
                               "POST /console/sign-in for an HttpOnly, SameSite=Strict cookie that expires."}},
            "schemas": {"Event": {"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in events],
                                  "discriminator": {"propertyName": "event_type", "mapping": {
                                      schema["title"]: f"#/components/schemas/{name}"
                                      for name, schema in events.items()}}},
                        "Category": {"type": "string", "enum": sorted(categories),
                                     "description": "a data category of the retention policy (deploy/retention.yaml)"},
                        **events},
        },
    }


def document_bytes(catalog: Catalog, categories: list[str]) -> bytes:
    return (json.dumps(document(catalog, categories), indent=2, sort_keys=False) + "\n").encode()
