"""Every HTTP route the worker answers, in one table: the auth middleware reads its scopes
(streams/http/auth.py), the OpenAPI document is built from it (streams/http/openapi.py, served at
/openapi.json), and a test fails when a route answers that this table does not list
(tests/integration/http/test_openapi.py). A route cannot exist without its document and its scope.

A declaration table: long, and meant to be read as one."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

__all__ = ["Route", "ROUTES", "CONSOLE_ROUTES", "pattern_of", "ERRORS", "MESSAGE"]

# The shapes every refusal takes (docs/protocol.md): a field and its problem, never the value.
ERRORS: dict[str, Any] = {
    "type": "object", "required": ["errors"],
    "properties": {"errors": {"type": "array", "items": {
        "type": "object", "required": ["index", "field", "problem"],
        "properties": {"index": {"type": ["integer", "null"], "description": "the event's place in a batch"},
                       "field": {"type": "string"}, "problem": {"type": "string"}}}}},
}
MESSAGE: dict[str, Any] = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}

_TIME = {"type": ["string", "null"], "format": "date-time"}
_STORE_PROGRESS = {
    "type": "object",
    "properties": {"store": {"type": "string"},
                   "status": {"enum": ["pending", "erased", "nothing_found", "retained_legal_hold", "failed"]},
                   "items_erased": {"type": "integer"}, "attempts": {"type": "integer"},
                   "acknowledged_at": _TIME, "error": {"type": ["string", "null"]}, "verified_at": _TIME,
                   "items_found": {"type": ["integer", "null"]}},
}
_ERASURE = {
    "type": "object", "required": ["erasures"],
    "properties": {"erasures": {"type": "array", "items": {
        "type": "object",
        "properties": {"request_id": {"type": "string", "format": "uuid"}, "account_hash": {"type": "string"},
                       "state": {"type": "string"}, "reason": {"type": "string"}, "opened_at": _TIME,
                       "deadline": _TIME, "completed_at": _TIME, "keys_destroyed_at": _TIME,
                       "overdue": {"type": "boolean"}, "stores": {"type": "array", "items": _STORE_PROGRESS}}}}},
}
_ACCESS = {
    "type": "object",
    "properties": {"request_id": {"type": "string", "format": "uuid"}, "state": {"type": "string"},
                   "opened_at": _TIME, "deadline": _TIME, "completed_at": _TIME, "expires_at": _TIME,
                   "overdue": {"type": "boolean"}, "archive_sha256": {"type": ["string", "null"]},
                   "stores": {"type": "array", "items": {"type": "object"}}},
}
_CONSENT = {
    "type": "object", "required": ["subject_id", "as_of", "purposes", "newsletter", "receipts"],
    "properties": {"subject_id": {"type": "string"}, "as_of": {"type": "string", "format": "date-time"},
                   "purposes": {"type": "object", "additionalProperties": {
                       "type": "object",
                       "properties": {"granted": {"type": "boolean"}, "given_at": _TIME, "expires_at": _TIME,
                                      "policy_version": {"type": ["string", "null"]}}}},
                   "newsletter": {"type": "boolean"}, "receipts": {"type": "array", "items": {"type": "object"}}},
}
_KEY = {"type": ["string", "null"], "description": "the 32-byte AES key in base64; null once the subject is erased"}
_SUBJECT_ID = {"type": "string", "minLength": 1, "maxLength": 256,
               "description": "an identifier: 1 to 256 printable characters (Unicode's sense: no control, format "
                              "or separator character other than the space)"}


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    path: str  # an OpenAPI path template: /v1/accounts/{account_id}/erasure
    scope: str | None  # the token scope it needs; None: open, no token
    summary: str
    request: dict[str, Any] | None = None  # the JSON body's schema ($ref allowed)
    responses: dict[int, tuple[str, str, dict[str, Any] | None]] = dataclasses.field(default_factory=dict)
    # status -> (description, media type, schema); the auth refusals are added for every scoped route
    parameters: tuple[dict[str, Any], ...] = ()
    request_media: str = "application/json"


def _path(name: str, what: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": what, "schema": _SUBJECT_ID}


_JSON = "application/json"
ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", None, "the process answers", responses={200: ("alive", _JSON, {"type": "object"})}),
    Route("GET", "/readyz", None, "the worker has joined its consumer groups", responses={
        200: ("ready", _JSON, {"type": "object"}), 503: ("starting", _JSON, {"type": "object"})}),
    Route("GET", "/metrics", None, "Prometheus metrics (docs/observability.md)",
          responses={200: ("the text exposition format", "text/plain", {"type": "string"})}),
    Route("GET", "/openapi.json", None, "this document", responses={200: ("OpenAPI 3.1", _JSON, {"type": "object"})}),
    Route("POST", "/v1/events", "ingest", "send one event or a list of up to 1,000",
          parameters=({"name": "Sec-GPC", "in": "header", "required": False,
                       "description": "Global Privacy Control: 1 opts the events' subjects out of advertising "
                                      "(docs/processors.md)", "schema": {"type": "string"}},),
          request={"oneOf": [{"$ref": "#/components/schemas/Event"},
                             {"type": "array", "minItems": 1, "maxItems": 1000,
                              "items": {"$ref": "#/components/schemas/Event"}}]},
          responses={
              202: ("durable: every event will be applied once", _JSON, {
                  "type": "object", "required": ["accepted", "event_ids"],
                  "properties": {"accepted": {"type": "integer"},
                                 "gpc_signals": {"type": "integer", "description": "the GPC signals added"},
                                 "event_ids": {"type": "array", "items": {"type": "string", "format": "uuid"}}}}),
              400: ("every bad field, by event index", _JSON, ERRORS),
              408: ("the body did not arrive in time", _JSON, ERRORS),
              413: ("the body is over 1 MiB", _JSON, ERRORS),
              503: ("the worker drains or the database is unreachable: send again later", _JSON, None)}),
    Route("POST", "/v1/keys", "keys", "the keys to seal personal fields with, created on first use",
          request={"type": "object", "required": ["subjects"], "properties": {"subjects": {
              "type": "array", "minItems": 1, "maxItems": 1000, "items": {
                  "type": "object", "required": ["subject", "category"],
                  "properties": {"subject": _SUBJECT_ID, "category": {"$ref": "#/components/schemas/Category"}}}}}},
          responses={
              200: ("one key per pair asked", _JSON, {"type": "object", "required": ["keys"], "properties": {
                  "keys": {"type": "array", "items": {"type": "object", "properties": {
                      "subject": {"type": "string"}, "category": {"type": "string"},
                      "kid": {"type": "string"}, "key": _KEY}}}}}),
              400: ("a bad subject or category", _JSON, ERRORS),
              408: ("the body did not arrive in time", _JSON, ERRORS),
              413: ("the body is too large", _JSON, ERRORS), 503: ("the database is unreachable", _JSON, MESSAGE)}),
    Route("POST", "/v1/keys/lookup", "keys", "the keys sealed values name, to open them",
          request={"type": "object", "required": ["kids"], "properties": {"kids": {
              "type": "array", "minItems": 1, "maxItems": 1000,
              "items": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"}}}},
          responses={
              200: ("each known kid's key (null once destroyed); unknown kids are absent", _JSON, {
                  "type": "object", "required": ["keys"],
                  "properties": {"keys": {"type": "object", "additionalProperties": _KEY}}}),
              400: ("not a list of key ids", _JSON, ERRORS), 408: ("the body did not arrive in time", _JSON, ERRORS),
              413: ("the body is too large", _JSON, ERRORS), 503: ("the database is unreachable", _JSON, MESSAGE)}),
    Route("GET", "/v1/accounts/{account_id}/erasure", "read", "the account's erasures, store by store",
          parameters=(_path("account_id", "the account"),),
          responses={200: ("every erasure of the account", _JSON, _ERASURE), 400: ("a bad id", _JSON, ERRORS),
                     404: ("no erasure for this account", _JSON, {"type": "object"}),
                     503: ("the database is unreachable", _JSON, MESSAGE)}),
    Route("GET", "/v1/accounts/{account_id}/export", "read",
          "the account's access archive (GDPR Art. 15): opens the request, then the zip once every store answered",
          parameters=(_path("account_id", "the account"),),
          responses={200: ("the archive", "application/zip", {"type": "string", "format": "binary"}),
                     202: ("the stores are answering; ask again", _JSON, _ACCESS), 400: ("a bad id", _JSON, ERRORS),
                     404: ("no such account", _JSON, MESSAGE), 503: ("the database is unreachable", _JSON, MESSAGE)}),
    Route("GET", "/v1/subjects/{subject_id}/consent", "read", "the consent of an account or visitor, with receipts",
          parameters=(_path("subject_id", "an account or visitor id"),
                      {"name": "at", "in": "query", "required": False,
                       "description": "as of this time (epoch milliseconds); default: the pipeline's clock",
                       "schema": {"type": "integer"}}),
          responses={200: ("the consent per purpose", _JSON, _CONSENT), 400: ("a bad id or time", _JSON, ERRORS),
                     503: ("the database is unreachable", _JSON, MESSAGE)}),
)


# The console (lifecycle/console/): server-rendered pages for the privacy team and the auditor,
# read-only, behind a session cookie that a read-scope token is exchanged for (scope "console":
# the middleware lets these through; each page checks the session itself).
_HTML = "text/html"
_FORM = "application/x-www-form-urlencoded"
_PAGE = {200: ("the page", _HTML, {"type": "string"}),
         303: ("not signed in: to the sign-in page", _HTML, None)}
_REQUEST_ID = {"name": "request_id", "in": "path", "required": True, "description": "an erasure's request id",
               "schema": {"type": "string", "format": "uuid"}}
_LOOKUP = {"type": "object", "properties": {"id": {"type": "string", "maxLength": 256}}}
CONSOLE_ROUTES: tuple[Route, ...] = (
    Route("GET", "/console", "console", "overview: erasures, access requests, dead letters, stores, charts",
          responses=_PAGE),
    Route("GET", "/console/sign-in", None, "the sign-in form", responses={200: ("the form", _HTML, None)}),
    Route("POST", "/console/sign-in", None, "exchange a read-scope token for a session cookie",
          request={"type": "object", "properties": {"token": {"type": "string", "maxLength": 4096}}},
          request_media=_FORM,
          responses={303: ("signed in: to the overview (Set-Cookie)", _HTML, None),
                     401: ("not a token of scope read", _HTML, None), 400: ("not a form", _HTML, None),
                     413: ("the body is too large", _HTML, None)}),
    Route("POST", "/console/sign-out", "console", "end the session",
          responses={303: ("to the sign-in page", _HTML, None)}),
    Route("GET", "/console/console.css", None, "the console's style sheet",
          responses={200: ("CSS", "text/css", {"type": "string"})}),
    Route("GET", "/console/erasures", "console", "erasures, filtered by state, store, overdue and date",
          parameters=tuple({"name": n, "in": "query", "required": False, "description": d, "schema": sch}
                           for n, d, sch in (
                               ("state", "open, complete, regressed", {"type": "string"}),
                               ("store", "a store's name: erasures still waiting for it", {"type": "string"}),
                               ("overdue", "1: only erasures past their deadline", {"type": "string"}),
                               ("from", "opened on or after this day (YYYY-MM-DD)", {"type": "string"}),
                               ("to", "opened on or before this day (YYYY-MM-DD)", {"type": "string"}))),
          responses={**_PAGE, 400: ("a bad filter", _HTML, None)}),
    Route("POST", "/console/erasures", "console", "look an account up by its id (by keyed hash; the id is not shown)",
          request=_LOOKUP, request_media=_FORM,
          responses={**_PAGE, 400: ("not a form", _HTML, None), 413: ("too large", _HTML, None)}),
    Route("GET", "/console/erasures/{request_id}", "console", "one erasure's timeline and its certificate",
          parameters=(_REQUEST_ID,), responses={**_PAGE, 404: ("no such erasure", _HTML, None)}),
    Route("GET", "/console/erasures/{request_id}/certificate", "console", "the erasure's signed certificate",
          parameters=(_REQUEST_ID,),
          responses={200: ("the certificate", "application/json", {"type": "object"}),
                     303: ("not signed in", _HTML, None), 404: ("not issued", _HTML, None)}),
    Route("GET", "/console/records", "console", "the record of processing and the data map", responses=_PAGE),
    Route("GET", "/console/consent", "console", "a subject's consent receipts: the lookup form", responses=_PAGE),
    Route("POST", "/console/consent", "console", "a subject's consent receipts (the id is not shown)",
          request=_LOOKUP, request_media=_FORM,
          responses={**_PAGE, 400: ("not a form", _HTML, None), 413: ("too large", _HTML, None)}),
)
ROUTES = (*ROUTES, *CONSOLE_ROUTES)


def pattern_of(route: Route) -> re.Pattern[str]:
    """The paths a route answers: each {parameter} one path segment, a trailing slash allowed."""
    body = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(route.path))
    return re.compile(f"^{body}/?$")
