"""HTML for the console: every value escaped, one layout, the headers every page carries.

No script anywhere and nothing fetched from elsewhere: the Content-Security-Policy allows the
console's own style sheet and inline SVG pictures, nothing else, so the pages work with no
internet and a value that slipped through escaping still could not run."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable
from typing import Any

__all__ = ["esc", "layout", "HEADERS", "table", "when", "CSS"]

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}

_NAV = (("/console", "Overview"), ("/console/erasures", "Erasures"), ("/console/records", "Record of processing"),
        ("/console/consent", "Consent receipts"))


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(value: dt.datetime | None) -> str:
    """A time as the pages show it: UTC, to the minute; a dash when there is none."""
    if value is None:
        return "–"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def table(headings: Iterable[str], rows: Iterable[Iterable[str]], *, caption: str = "", empty: str = "none") -> str:
    """A table of cells already made HTML (escape values with ``esc`` before)."""
    head = "".join(f"<th scope=col>{esc(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    if not body:
        return f"<p class=empty>{esc(empty)}</p>"
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def layout(title: str, body: str, *, signed_in: bool = True, active: str = "") -> str:
    nav = ""
    if signed_in:
        links = "".join(f'<a href="{href}"{" aria-current=page" if href == active else ""}>{esc(text)}</a>'
                        for href, text in _NAV)
        nav = (f"<nav>{links}<form method=post action=/console/sign-out class=signout>"
               "<button type=submit>Sign out</button></form></nav>")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)} · lifecycle console</title><link rel=stylesheet href=/console/console.css>"
            f"</head><body><header><strong>lifecycle</strong> privacy console</header>{nav}"
            f"<main><h1>{esc(title)}</h1>{body}</main>"
            "<footer>Read-only. No personal data is shown: accounts appear by keyed hash.</footer></body></html>")


CSS = """
:root { color-scheme: light; --ink: #1b1f24; --muted: #57606a; --line: #d0d7de; --warn: #9a3412; --ok: #166534;
        --accent: #1d4ed8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--ink); background: #f6f8fa; }
header { padding: .6rem 1.2rem; background: #0f172a; color: #e2e8f0; }
nav { display: flex; gap: 1rem; align-items: center; padding: .5rem 1.2rem; background: #fff;
      border-bottom: 1px solid var(--line); }
nav a { color: var(--accent); text-decoration: none; }
nav a[aria-current=page] { font-weight: 600; text-decoration: underline; }
nav .signout { margin-left: auto; }
main { padding: 1rem 1.2rem; max-width: 1200px; }
footer { padding: 1rem 1.2rem; color: var(--muted); font-size: 13px; }
h1 { font-size: 1.4rem; margin: .2rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.4rem 0 .5rem; }
table { border-collapse: collapse; background: #fff; width: 100%; margin-bottom: 1rem; }
th, td { border: 1px solid var(--line); padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef2f6; }
caption { text-align: left; color: var(--muted); padding: .2rem 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: .8rem; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .7rem; }
.card b { display: block; font-size: 1.6rem; }
.warn { color: var(--warn); font-weight: 600; }
.ok { color: var(--ok); font-weight: 600; }
.empty { color: var(--muted); }
form.filters { display: flex; flex-wrap: wrap; gap: .6rem; align-items: end; margin-bottom: 1rem; }
label { display: flex; flex-direction: column; font-size: 13px; color: var(--muted); }
input, select, button { font: inherit; padding: .25rem .4rem; }
code { font-size: 13px; word-break: break-all; }
svg { background: #fff; border: 1px solid var(--line); }
ol.timeline li { margin-bottom: .3rem; }
@media print { nav, form, footer { display: none; } body { background: #fff; } }
"""
