"""The deployment files: docker-compose.yml against the Compose Specification, every service's
command a real CLI command, every mounted file present, Prometheus and Grafana wired to what the
pipeline serves."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from compose_spec import ComposeSpecification, PyCompose

from lifecycle.cli import _parser
from lifecycle.core.config import PROJECT_ROOT

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
CATALOGUE = PROJECT_ROOT / "docs" / "observability.md"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the YAML merge keys Compose allows


def _validate(spec: dict) -> None:
    PyCompose.from_json(json.dumps(spec)).validate()  # strict: unknown keys and values refused
    ComposeSpecification.model_validate(spec)  # the schema's model


def test_compose_file_follows_the_compose_specification():
    _validate(_compose())


@pytest.mark.parametrize("mutation", [
    lambda s: s["services"]["worker"].update({"comand": ["worker"]}),
    lambda s: s["services"]["worker"]["depends_on"]["postgres"].update({"condition": "when_ready"}),
    lambda s: s["services"]["kafka"].update({"restart": "sometimes"}),
])
def test_a_broken_compose_file_is_refused(mutation):
    spec = _compose()
    mutation(spec)
    with pytest.raises(Exception):  # noqa: B017 (two validators, each with error classes of its own)
        _validate(spec)


def test_every_service_of_our_image_runs_a_real_cli_command():
    ours = {name: svc for name, svc in _compose()["services"].items() if "build" in svc}
    assert {"topics", "worker", "connector-postgres", "connector-files", "connector-mailing-list",
            "connector-redis"} <= set(ours)
    for name, svc in ours.items():
        try:
            _parser().parse_args(svc["command"])
        except SystemExit:
            pytest.fail(f"service {name}: `lifecycle {' '.join(svc['command'])}` is not a command")
    stores = {svc["command"][1] for svc in ours.values() if svc["command"][0] == "connector"}
    from lifecycle.connectors.stores import STORES

    assert stores == set(STORES)


def test_every_mounted_file_exists():
    for name, svc in _compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("./"):
                assert (PROJECT_ROOT / source).exists(), f"service {name} mounts a missing {source}"


def test_prometheus_scrapes_every_connector_service_and_loads_the_rules():
    config = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = set(jobs["lifecycle-connector"]["static_configs"][0]["targets"])
    services = {n for n in _compose()["services"] if n.startswith("connector-")}
    assert targets == {f"{n}:9100" for n in services}
    assert jobs["lifecycle-worker"]["dns_sd_configs"][0]["names"] == ["worker"]


def _catalogue() -> set[str]:
    return set(re.findall(r"^\| `(lifecycle_[a-z_]+)`", CATALOGUE.read_text(), flags=re.M))


def test_dashboard_queries_only_catalogue_metrics():
    dashboard = json.loads((PROJECT_ROOT / "deploy" / "grafana" / "lifecycle.json").read_text())
    known = _catalogue()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 12
    for expr in exprs:
        for name in re.findall(r"lifecycle_[a-z_]+", expr):
            assert re.sub(r"_(bucket|sum|count)$", "", name) in known, f"{name} is not in the catalogue"


def test_production_topic_profile_replicates():
    from lifecycle.topics import load_spec

    specs = load_spec(PROJECT_ROOT / "deploy" / "topics.yaml", "production")
    assert {s.replication_factor for s in specs} == {3}
    assert {s.configs["min.insync.replicas"] for s in specs} == {"2"}
