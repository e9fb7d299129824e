"""Role names and DSNs of the components (lifecycle/core/pgroles.py)."""

from __future__ import annotations

import dataclasses

import pytest
from psycopg.conninfo import conninfo_to_dict

from lifecycle.core.config import Settings
from lifecycle.core.errors import ConfigError
from lifecycle.core.pgroles import component_dsn, init_passwords, role_name


def test_role_names_are_the_prefix_and_the_component_made_safe():
    s = Settings(postgres_role_prefix="t1_")
    assert role_name(s, "store-mailing-list") == "t1_store_mailing_list"
    assert role_name(s, "store-CRM.eu") == "t1_store_crm_eu"
    with pytest.raises(ConfigError, match="POSTGRES_ROLE_PREFIX"):
        Settings(postgres_role_prefix="Bad-Prefix").validate()


def test_a_component_connects_as_its_role_with_its_password_and_keeps_the_rest(tmp_path):
    s = Settings(state_dir=tmp_path, postgres_dsn="postgresql://owner:secret@db.example:5433/life?sslmode=require")
    with pytest.raises(ConfigError, match="start the worker once"):
        component_dsn(s, "reader")
    folder = init_passwords(s, ["files"])
    assert sorted(p.name for p in folder.iterdir()) == ["front.password", "reader.password", "store-files.password",
                                                        "worker.password"]
    parts = conninfo_to_dict(component_dsn(s, "store-files"))
    assert parts["user"] == "lifecycle_store_files" and parts["password"] == (folder / "store-files.password"
                                                                              ).read_text().strip()
    assert (parts["host"], parts["port"], parts["dbname"], parts["sslmode"]) == ("db.example", "5433", "life",
                                                                                  "require")
    # A DSN without user or password (what compose gives a connector) works the same.
    bare = dataclasses.replace(s, postgres_dsn="postgresql://db.example:5433/life")
    assert conninfo_to_dict(component_dsn(bare, "worker"))["user"] == "lifecycle_worker"
    assert component_dsn(dataclasses.replace(s, postgres_roles=False), "worker") == s.postgres_dsn
