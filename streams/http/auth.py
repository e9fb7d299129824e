"""Who may call what on the HTTP port: bearer tokens with scopes, checked before any `/v1` view
runs, a cap on requests in flight, and a body read whole, within a cap and a deadline.

Scopes: `ingest` (POST /v1/events), `read` (consent, erasure status, access export), `keys` (the key service).
Tokens: `LIFECYCLE_HTTP_TOKEN` (ingest), `LIFECYCLE_READ_TOKEN` (read), `LIFECYCLE_KEYS_TOKEN`
(keys), each a comma-separated list so that an old and a new token work side by side while
callers move over; and `LIFECYCLE_HTTP_TOKENS_FILE`, one `SCOPE[,SCOPE...] TOKEN` a line. A `/v1`
route that names no scope is refused to every token (fail closed). Token values never reach a log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from lifecycle.core.config import Settings
from lifecycle.core.errors import ConfigError
from lifecycle.core.keys import create_key_file
from lifecycle.streams.http.routes import CONSOLE_ROUTES, ROUTES, pattern_of

__all__ = ["SCOPES", "ROUTE_SCOPES", "Tokens", "load_tokens", "init_tokens_file", "middleware", "read_body",
           "BodyTooLarge", "BodyTooSlow", "OPEN_ROUTES"]

SCOPES = ("ingest", "read", "keys")
# (method, path pattern) -> the scope it needs, from the one route table (streams/http/routes.py).
ROUTE_SCOPES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (r.method, pattern_of(r), r.scope) for r in ROUTES if r.scope is not None and r.path.startswith("/v1/"))
# Routes that answer without a token; every other path is 404 (Faust's own index and router too).
OPEN_ROUTES = tuple(r.path for r in ROUTES if r.scope is None and not r.path.startswith("/console"))
# The console's pages: through to their views, which check the session cookie (lifecycle/console/).
CONSOLE = tuple((r.method, pattern_of(r)) for r in CONSOLE_ROUTES)


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Tokens:
    """Every accepted token with its scopes; compared in constant time, all of them every time."""

    entries: tuple[tuple[bytes, frozenset[str]], ...]

    def __repr__(self) -> str:  # never the tokens
        return f"Tokens({len(self.entries)} tokens)"

    def scopes_of(self, presented: str | None) -> frozenset[str] | None:
        """The scopes of a presented token, or None when it is no token of ours."""
        if presented is None:
            return None
        wanted = presented.encode()
        found: frozenset[str] | None = None
        for token, scopes in self.entries:
            if hmac.compare_digest(token, wanted):  # no early exit: the time says nothing
                found = scopes if found is None else found | scopes
        return found



def load_tokens(settings: Settings) -> Tokens:
    """The tokens these settings name. ConfigError names the file line that is wrong."""
    entries: list[tuple[bytes, frozenset[str]]] = []
    for raw, scope in ((settings.http_token, "ingest"), (settings.read_token, "read"),
                       (settings.keys_token, "keys")):
        for token in (raw or "").split(","):
            if token.strip():
                entries.append((token.strip().encode(), frozenset({scope})))
    if settings.http_tokens_file is not None:
        entries.extend(_read_file(settings.http_tokens_file))
    return Tokens(tuple(entries))


def init_tokens_file(settings: Settings) -> bool:
    """Write a tokens file with one new token per scope where ``LIFECYCLE_HTTP_TOKENS_FILE`` names
    one that does not exist (`lifecycle keys init`: compose's one-shot step). True if written."""
    path = settings.http_tokens_file
    if path is None or path.exists():
        return False
    create_key_file(path, "".join(f"{scope} {secrets.token_urlsafe(32)}\n" for scope in SCOPES).encode(),
                    encode=False)
    return True


def _read_file(path: Path) -> list[tuple[bytes, frozenset[str]]]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"LIFECYCLE_HTTP_TOKENS_FILE {path}: {exc.strerror}") from None
    out = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        scopes = frozenset(parts[0].split(",")) if len(parts) == 2 else frozenset()
        if len(parts) != 2 or not scopes <= set(SCOPES) or len(parts[1]) < 16:
            raise ConfigError(f"LIFECYCLE_HTTP_TOKENS_FILE {path} line {number}: expected 'SCOPE[,SCOPE] TOKEN' "
                              f"with scopes among {', '.join(SCOPES)} and a token of 16 characters or more")
        out.append((parts[1].encode(), scopes))
    return out


def scope_for(method: str, path: str) -> str | None:
    for m, pattern, scope in ROUTE_SCOPES:
        if m == method and pattern.match(path):
            return scope
    return None


def middleware(tokens: Tokens, max_in_flight: int,
               refused: Callable[[str, str], None]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The aiohttp middleware for every `/v1` request: at most ``max_in_flight`` at once (a slow
    body holds its place until its deadline), each with a token that has the route's scope.
    ``refused(path, reason)`` counts each refusal."""
    in_flight = asyncio.Semaphore(max_in_flight)

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if request.path in OPEN_ROUTES:
            return await handler(request)  # health and metrics: open, and never crowded out
        if request.path == "/console" or request.path.startswith("/console/"):
            if not any(m == request.method and p.match(request.path) for m, p in CONSOLE):
                return web.json_response({"error": "no such route"}, status=404)
            if (problem := _path_problem(request.raw_path)) is not None:
                return web.json_response({"errors": [{"index": None, "field": "path", "problem": problem}]},
                                         status=400)
            async with in_flight:
                return await handler(request)
        if not request.path.startswith("/v1/"):
            return web.json_response({"error": "no such route"}, status=404)
        if in_flight.locked():
            refused(request.path, "busy")
            return web.json_response({"error": "too many requests in flight; retry"}, status=503,
                                     headers={"Retry-After": "1"})
        async with in_flight:
            scopes = tokens.scopes_of(_bearer(request))
            if scopes is None:
                refused(request.path, "unauthorized")
                return web.json_response({"error": "a valid bearer token is required"}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
            needed = scope_for(request.method, request.path)
            if needed is None or needed not in scopes:
                refused(request.path, "forbidden")
                return web.json_response({"error": f"this token lacks the scope {needed or 'of this route'}"},
                                         status=403)
            if (problem := _path_problem(request.raw_path)) is not None:
                return web.json_response({"errors": [{"index": None, "field": "path", "problem": problem}]},
                                         status=400)
            encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                refused(request.path, "unsupported_encoding")
                return web.json_response({"errors": [{"index": None, "field": "Content-Encoding",
                                                      "problem": "not supported: send the body uncompressed"}]},
                                         status=415)
            return await handler(request)

    return guard


def _path_problem(raw_path: str) -> str | None:
    """Why a request path cannot name anything: an identifier in it is not UTF-8 once its escapes
    are decoded, or holds a control character (the server would otherwise pass it on as text)."""
    try:
        text = urllib.parse.unquote_to_bytes(raw_path.split("?", 1)[0]).decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 once its %-escapes are decoded"
    if not text.isprintable():
        return "contains a control character"
    return None


def _bearer(request: web.Request) -> str | None:
    """The presented token, or None: a header that is not ASCII is no token of ours (401, not a
    500 from comparing it)."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header.isascii():
        return None
    return header[len("Bearer "):].strip()


async def read_body(request: Any, cap: int, deadline_s: float) -> bytes:
    """The whole body, up to ``cap`` bytes, within ``deadline_s``: BodyTooLarge, BodyTooSlow."""
    if (request.content_length or 0) > cap:
        raise BodyTooLarge
    chunks, size = [], 0
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                chunk = await request.content.read(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    raise BodyTooLarge
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow from None
    return b"".join(chunks)
