"""The record of processing activities (GDPR Art. 30(1)), written by `lifecycle records`.

Assembled from what the running code obeys, so that it cannot drift from it: the categories,
their time limits and what closure does to them from deploy/retention.yaml (Art. 30(1)(f)); the
personal fields of every record from the schemas' annotations (`lifecycle datamap`); the topics
from deploy/topics.yaml; the recipients from the registered stores and what each shipped store
keeps. What no file of the code knows (purposes in the policy's own words, the people concerned,
the legal basis, the tables' contents, the security measures) is kept in deploy/processing.yaml,
and `problems` says where that file and the code disagree.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from lifecycle.core.config import Settings
from lifecycle.core.policy import Policy, load_policy
from lifecycle.core.processing import PROCESSING_FILE, load_processing
from lifecycle.schemas.catalog import load_catalog
from lifecycle.schemas.personal import datamap

__all__ = ["PROCESSING_FILE", "load_processing", "registered_stores", "build_record", "problems", "to_markdown",
           "table_names"]

_CATEGORY_KEYS = {"subjects", "data", "purpose", "basis", "source"}


def _retention(policy: Policy, name: str) -> dict[str, Any]:
    c = policy.categories[name]
    limit = ("until the account closes" if c.starts == "account_closure" and c.window.amount == 0
             else f"{c.window} from {c.starts.replace('_', ' ')}")
    return {"time_limit": limit, "action": c.action, "at_closure": c.at_closure, "legal_hold_keeps": c.legal_hold}


def registered_stores(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Every store erasures wait for, and the categories it keeps: what a shipped store declares,
    else (a store of another team) what its deletion orders name. With a database, the stores that
    joined with `lifecycle store add` too."""
    from lifecycle.connectors.stores import held_categories

    policy = load_policy(settings.retention_policy)
    stores = list(settings.erasure_stores)
    if settings.postgres_dsn:
        import psycopg

        from lifecycle.store_registry import listing

        with psycopg.connect(settings.postgres_dsn, autocommit=True, connect_timeout=10) as conn:
            stores += [r.store for r in listing(conn) if r.waited_for and r.store not in stores]
    return {s: held_categories(s) or tuple(policy.erased_at_closure(False)) for s in stores}


def build_record(settings: Settings, stores: Mapping[str, Iterable[str]],
                 processing: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record as data. ``stores``: every registered store and the categories it keeps (a
    store not shipped here: the categories its orders name)."""
    processing = processing or load_processing()
    policy = load_policy(settings.retention_policy)
    fields = datamap(load_catalog(), policy)
    topics = yaml.safe_load((settings.topic_spec).read_text())["topics"]
    held_by: dict[str, list[str]] = {}
    for store, categories in stores.items():
        for category in categories:
            held_by.setdefault(category, []).append(store)
    described = processing["categories"]
    activities = []
    for name in policy.categories:
        about = described.get(name, {})
        activities.append({
            "category": name,
            "subjects": about.get("subjects", []),
            "data": about.get("data"),
            "purpose": about.get("purpose"),
            "legal_basis": about.get("basis"),
            "source": about.get("source"),
            **_retention(policy, name),
            "fields": [f"{r['record']}.{r['field']}" for r in fields if r["category"] == name],
            "topics": sorted(t for t, spec in topics.items() if spec.get("retention") == name),
            "tables": sorted(t for t, cats in processing.get("tables", {}).items() if name in (cats or [])),
            "recipients": sorted(held_by.get(name, [])),
        })
    return {
        "format": "lifecycle-record-of-processing/1",
        "generated_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        "policy_version": hashlib.sha256(settings.retention_policy.read_bytes()).hexdigest()[:16],
        "controller": processing.get("controller", {}),
        "data_subjects": processing.get("subjects", {}),
        "activities": activities,
        "recipients": {store: sorted(categories) for store, categories in sorted(stores.items())},
        "transfers_to_third_countries": processing.get("transfers", "none"),
        "security_measures": processing.get("security", []),
    }


def problems(record: dict[str, Any], processing: dict[str, Any], tables: Iterable[str] = ()) -> list[str]:
    """Where the record is incomplete: a category without its description, a description of no
    category, a table (of ``tables``, the database's) in no list, a store's category unknown."""
    out = []
    known = {a["category"] for a in record["activities"]}
    for activity in record["activities"]:
        missing = sorted(k for k, v in (("subjects", True), ("data", activity["data"]),
                                        ("purpose", activity["purpose"]), ("basis", activity["legal_basis"]),
                                        ("source", activity["source"])) if not v)
        if activity["category"] not in processing["categories"]:
            out.append(f"category {activity['category']}: not described in deploy/processing.yaml")
        elif missing:
            out.append(f"category {activity['category']}: no {', '.join(missing)}")
    for name, about in processing["categories"].items():
        if name not in known:
            out.append(f"deploy/processing.yaml describes {name}, which deploy/retention.yaml does not have")
        elif set(about) - _CATEGORY_KEYS:
            out.append(f"category {name}: unknown keys {sorted(set(about) - _CATEGORY_KEYS)}")
    mapped = processing.get("tables", {})
    for table in tables:
        if table not in mapped:
            out.append(f"table {table}: in the database, in no list of deploy/processing.yaml")
    for table, categories in mapped.items():
        for category in categories or []:
            if category not in known:
                out.append(f"table {table}: category {category} is not in deploy/retention.yaml")
    for store, categories in record["recipients"].items():
        for category in sorted(set(categories) - known):
            out.append(f"store {store} keeps {category}, which deploy/retention.yaml does not have")
    return out


def table_names(conn: Any) -> list[str]:
    """The database's tables in the schemas the pipeline uses; month partitions as their parent."""
    rows = conn.execute(
        "SELECT CASE WHEN n.nspname = 'public' THEN '' ELSE n.nspname || '.' END || c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'mailing') "
        "AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname NOT LIKE 'session\\_logs\\_p%'"
    ).fetchall()
    return sorted(r[0] for r in rows)


def to_markdown(record: dict[str, Any]) -> str:
    c = record["controller"]
    lines = ["# Record of processing activities (GDPR Art. 30(1))", "",
             f"Controller: {c.get('name')} — {c.get('contact')} (requests: {c.get('requests')}). "
             f"Generated {record['generated_at']} from deploy/retention.yaml (version {record['policy_version']}), "
             "the schemas' personal-data annotations and deploy/processing.yaml by `lifecycle records`.", "",
             "## Data subjects", ""]
    lines += [f"- **{k}**: {v}" for k, v in record["data_subjects"].items()]
    lines += ["", "## Processing by category", ""]
    for a in record["activities"]:
        lines += [f"### {a['category']}", "",
                  f"- People: {', '.join(a['subjects']) or 'none (not personal data)'}",
                  f"- Data: {a['data']}",
                  f"- Purpose: {a['purpose']}",
                  f"- Legal basis: {a['legal_basis']}; source: {a['source']}",
                  f"- Time limit (Art. 30(1)(f)): {a['time_limit']}, then {a['action']}; at account closure: "
                  f"{a['at_closure']}; a legal hold keeps it: {'yes' if a['legal_hold_keeps'] else 'no'}",
                  f"- Fields: {', '.join(a['fields']) or '—'}",
                  f"- Topics: {', '.join(a['topics']) or '—'}; tables: {', '.join(a['tables']) or '—'}",
                  f"- Recipients (stores): {', '.join(a['recipients']) or '—'}", ""]
    lines += ["## Recipients (Art. 30(1)(d))", ""]
    lines += [f"- **{store}**: {', '.join(cats)}" for store, cats in record["recipients"].items()]
    lines += ["",
              "## Transfers to third countries", "", str(record["transfers_to_third_countries"]), "",
              "## Security measures (Art. 32)", ""]
    lines += [f"- {m}" for m in record["security_measures"]]
    return "\n".join(lines) + "\n"


def write(record: dict[str, Any], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "record-of-processing.md", folder / "record-of-processing.json"
    md.write_text(to_markdown(record))
    js.write_text(json.dumps(record, indent=2) + "\n")
    return [md, js]
