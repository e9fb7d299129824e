"""`up` starts connectors for the stores shipped here only (issue 27: a store of another team
named in LIFECYCLE_ERASURE_STORES was spawned as `lifecycle connector NAME`, which exits with
"unknown store", and after five exits `up` stopped everything)."""

from __future__ import annotations

import dataclasses

from lifecycle.core.config import Settings
from lifecycle.store_registry import shipped
from lifecycle.supervisor import Supervisor


def test_only_shipped_stores_get_a_connector(tmp_path):
    live = dataclasses.replace(Settings.from_env({"LIFECYCLE_STATE_DIR": str(tmp_path)}),
                               erasure_stores=("postgres", "acme-crm", "files"))
    supervisor = Supervisor(stack=None, live=live, say=lambda _: None)  # type: ignore[arg-type]
    assert sorted(supervisor.ports) == ["files", "postgres"]
    assert [c.name for c in supervisor.connectors] == ["connector postgres", "connector files"]


def test_shipped_names():
    assert all(shipped(s) for s in ("postgres", "files", "mailing-list", "redis"))
    assert not shipped("acme-crm") and not shipped("")
