"""`report.html` in the access archive: the person's data in plain language, for a person rather
than a program (GDPR Art. 12(1): "concise, transparent, intelligible and easily accessible form,
using clear and plain language"; Art. 15(1)(a)-(d): purposes, categories, recipients, how long).

One file, self-contained: no script, nothing fetched (a Content-Security-Policy in the page says
so to the browser too), styles inline, readable printed. Every value is escaped."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

__all__ = ["render_report"]

_SOURCE = {"provided": "you gave it to us", "observed": "recorded as you used the service",
           "derived": "worked out by us from other data"}
_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; color: #1b1f24; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1rem; margin-bottom: .3rem; }
table { border-collapse: collapse; margin: .4rem 0 1rem; width: 100%; }
th, td { border: 1px solid #d0d7de; padding: .25rem .45rem; text-align: left; vertical-align: top; }
th { background: #f3f5f7; } dl { margin: .3rem 0; } dt { font-weight: 600; } dd { margin: 0 0 .4rem 1rem; }
.note { color: #57606a; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; } table { break-inside: auto; } }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _value(value: Any, depth: int = 0) -> str:
    """Any JSON value as HTML: a list of like objects as a table, an object as a list of terms."""
    if depth > 12:
        return _e(value)
    if isinstance(value, dict):
        if not value:
            return "<span class=note>(nothing)</span>"
        return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_value(v, depth + 1)}</dd>" for k, v in value.items()) + "</dl>"
    if isinstance(value, list):
        if not value:
            return "<span class=note>(none)</span>"
        if all(isinstance(v, dict) for v in value):
            keys = list(dict.fromkeys(k for v in value for k in v))
            head = "".join(f"<th scope=col>{_e(k)}</th>" for k in keys)
            rows = "".join("<tr>" + "".join(f"<td>{_value(v.get(k), depth + 1)}</td>" for k in keys) + "</tr>"
                           for v in value)
            return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        return "<ul>" + "".join(f"<li>{_value(v, depth + 1)}</li>" for v in value) + "</ul>"
    if value is None:
        return "<span class=note>(empty)</span>"
    return _e(value)


def render_report(request_id: str, opened: dt.datetime, documents: dict[str, Any], processing: dict[str, Any],
                  retention: dict[str, str]) -> bytes:
    """``documents``: each store's answer; ``processing``: deploy/processing.yaml; ``retention``:
    category -> how long it is kept, in words (the retention policy)."""
    described = processing.get("categories", {})
    controller = processing.get("controller", {})
    receivers: dict[str, list[str]] = {}
    for store in sorted(documents):
        for category in documents[store].get("holds", []):
            receivers.setdefault(category, []).append(store)
    sections = []
    for store in sorted(documents):
        doc = documents[store]
        rows = []
        for category in doc.get("holds", []):
            about = described.get(category, {})
            rows.append(
                f"<tr><td>{_e(about.get('data') or category)}</td><td>{_e(about.get('purpose') or '')}"
                f"<br><span class=note>legal basis: {_e(about.get('basis') or 'not stated')}</span></td>"
                f"<td>{_e(retention.get(category, 'as the retention policy says'))}</td>"
                f"<td>{_e(_SOURCE.get(about.get('source', ''), about.get('source') or ''))}</td>"
                f"<td>{_e(', '.join(receivers.get(category, [])))}</td></tr>")
        table = ("<table><thead><tr><th scope=col>What</th><th scope=col>Why we keep it</th>"
                 "<th scope=col>For how long</th><th scope=col>Where it came from</th>"
                 "<th scope=col>Systems that hold it</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>") \
            if rows else "<p class=note>This system keeps nothing about you.</p>"
        sections.append(f"<h2>{_e(store)}: {_e(doc.get('items', 0))} item(s)</h2>{table}"
                        f"<h3>The data itself</h3>{_value(doc.get('data'))}")
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>Your data at {_e(controller.get('name', ''))}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Your data at {_e(controller.get('name', ''))}</h1>"
        f"<p>You asked on {_e(opened.astimezone(dt.UTC).strftime('%d %B %Y'))} for a copy of the personal data we "
        "hold about you (request <code>" + _e(request_id) + "</code>). Below, for each of our systems: what it "
        "keeps, why, for how long, where it came from, then the data itself. The same data is in the JSON files "
        "beside this page (<code>stores/</code>), for a program to read or to take to another service.</p>"
        + "".join(sections)
        + "<h2>Your rights</h2><p>You may ask us to correct or delete this data, to restrict or object to its use, "
        f"and you may complain to your data protection authority. Write to {_e(controller.get('contact', ''))}.</p>"
        "</body></html>")
    return page.encode()
