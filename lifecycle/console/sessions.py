"""Console sessions: a read-scope token, presented once at sign-in, is exchanged for a random
session cookie (HttpOnly, SameSite=Strict, Secure when served over TLS, with an expiry). The
database keeps the SHA-256 of the cookie and its expiry only, so a database reader cannot sign
in, and every worker behind a balancer knows every session; signing out deletes the row."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any

__all__ = ["COOKIE", "SESSION_S", "open_session", "session_alive", "close_session"]

COOKIE = "lifecycle_console"
SESSION_S = 8 * 3600  # a working day; then sign in again


def _hash(cookie: str) -> bytes:
    return hashlib.sha256(cookie.encode()).digest()


async def open_session(conn: Any, now: dt.datetime) -> tuple[str, dt.datetime]:
    """A new session: its cookie value and when it expires. Expired sessions go first, so the
    table holds at most the sessions opened within SESSION_S."""
    await conn.execute("DELETE FROM console_sessions WHERE expires_at <= %s", (now,))
    cookie = secrets.token_urlsafe(32)
    expires = now + dt.timedelta(seconds=SESSION_S)
    await conn.execute("INSERT INTO console_sessions (session_hash, expires_at) VALUES (%s, %s)",
                       (_hash(cookie), expires))
    return cookie, expires


async def session_alive(conn: Any, cookie: str | None, now: dt.datetime) -> bool:
    if not cookie or len(cookie) > 128:
        return False
    cur = await conn.execute("SELECT 1 FROM console_sessions WHERE session_hash = %s AND expires_at > %s",
                             (_hash(cookie), now))
    return await cur.fetchone() is not None


async def close_session(conn: Any, cookie: str | None) -> None:
    if cookie and len(cookie) <= 128:
        await conn.execute("DELETE FROM console_sessions WHERE session_hash = %s", (_hash(cookie),))
