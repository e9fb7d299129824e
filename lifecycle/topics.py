"""The topic spec (deploy/topics.yaml) and `lifecycle topics apply`.

Every topic is created explicitly before any worker or producer starts: a topic auto-created
by a producer's metadata request gets the broker's default partition count, and then one
subject's events no longer land in the partition its other topics use (and Faust, where it
consumes, fails with PartitionsMismatch).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from lifecycle.core.config import Settings
from lifecycle.core.errors import TopicSpecError
from lifecycle.core.policy import Category, Policy, load_policy

__all__ = ["TopicSpec", "ApplyReport", "load_spec", "apply_topics", "admin_client", "retention_configs"]


@dataclasses.dataclass(frozen=True)
class TopicSpec:
    """One topic as declared: unprefixed name, partitions, replication factor, configs."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]
    retention: str | None = None  # the data category of deploy/retention.yaml it keeps


@dataclasses.dataclass
class ApplyReport:
    """What `topics apply` did and saw."""

    created: list[str] = dataclasses.field(default_factory=list)
    existing: list[str] = dataclasses.field(default_factory=list)
    drift: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"created {name}" for name in self.created]
        out.append(f"{len(self.created)} created, {len(self.existing)} already present")
        out.extend(f"drift: {d}" for d in self.drift)
        out.append("no drift" if not self.drift else f"{len(self.drift)} drift(s)")
        out.extend(f"note: {n}" for n in self.notes)
        return out


def _positive_int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TopicSpecError(f"{where}: expected a positive integer, got {value!r}")
    return value


_DERIVED = ("retention.ms", "segment.ms", "delete.retention.ms", "min.compaction.lag.ms", "max.compaction.lag.ms")
_HOUR_MS, _WEEK_MS = 3_600_000, 7 * 86_400_000


def retention_configs(policy: Policy, category: Category, cleanup: str) -> dict[str, str]:
    """Kafka configs that make the broker enforce a category's window by itself. A delete topic
    keeps a segment at most a tenth of the window (between an hour and a week), so an expired
    record outlives its window by at most that much; a compacted topic compacts an erased key
    within the policy's lag and shows its tombstone for a while to consumers catching up."""
    if cleanup == "compact":
        return {"min.compaction.lag.ms": "0",
                "max.compaction.lag.ms": str(policy.compaction_max_lag.approx_ms()),
                "delete.retention.ms": str(policy.tombstone_visible.approx_ms())}
    window = category.window.approx_ms()
    return {"retention.ms": str(window), "segment.ms": str(min(max(window // 10, _HOUR_MS), _WEEK_MS))}


def load_spec(path: Path, profile: str | None = None) -> list[TopicSpec]:
    """Read and validate the spec; errors name the topic and the key."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TopicSpecError(f"{path}: topic spec not found") from None
    except yaml.YAMLError as exc:
        raise TopicSpecError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("topics"), dict):
        raise TopicSpecError(f"{path}: expected a mapping with a 'topics' mapping")
    policy = _policy(path, raw)
    defaults = dict(raw.get("defaults") or {})
    if profile:
        overrides = (raw.get("profiles") or {}).get(profile)
        if overrides is None:
            raise TopicSpecError(f"{path}: unknown profile {profile!r}")
        defaults.update({k: v for k, v in overrides.items() if k != "configs"})
        defaults["configs"] = {**(defaults.get("configs") or {}), **(overrides.get("configs") or {})}
    specs = []
    for name, body in raw["topics"].items():
        body = body or {}
        if not isinstance(body, dict):
            raise TopicSpecError(f"{path}: topic {name}: expected a mapping")
        unknown = set(body) - {"partitions", "replication_factor", "configs", "retention"}
        if unknown:
            raise TopicSpecError(f"{path}: topic {name}: unknown key(s) {sorted(unknown)}")
        configs = {**(defaults.get("configs") or {}), **(body.get("configs") or {})}
        if "retention" in body:
            configs.update(_derived(path, name, policy, body["retention"], body.get("configs") or {}))
        specs.append(
            TopicSpec(
                name=str(name),
                partitions=_positive_int(
                    f"{path}: topic {name}: partitions",
                    body.get("partitions", defaults.get("partitions", 1)),
                ),
                replication_factor=_positive_int(
                    f"{path}: topic {name}: replication_factor",
                    body.get("replication_factor", defaults.get("replication_factor", 1)),
                ),
                configs={str(k): str(v) for k, v in configs.items()},
                retention=str(body["retention"]) if "retention" in body else None,
            )
        )
    return specs


def _policy(path: Path, raw: dict[str, Any]) -> Policy | None:
    if "policy" not in raw:
        return None
    return load_policy((path.parent / str(raw["policy"])).resolve())


def _derived(path: Path, name: str, policy: Policy | None, category: Any,
             own: dict[str, Any]) -> dict[str, str]:
    if policy is None:
        raise TopicSpecError(f"{path}: topic {name}: 'retention' needs a top-level 'policy' file")
    if category not in policy.categories:
        raise TopicSpecError(f"{path}: topic {name}: retention {category!r} is not a category of {policy.path}")
    doubled = sorted(set(own) & set(_DERIVED))
    if doubled:
        raise TopicSpecError(f"{path}: topic {name}: {', '.join(doubled)} come(s) from the retention policy; "
                             "remove them here")
    return retention_configs(policy, policy.categories[category], str(own.get("cleanup.policy", "delete")))


def admin_client(settings: Settings) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="lifecycle-admin",
        request_timeout_ms=15000,
        **settings.kafka_client_kwargs(),
    )


def _described_configs(admin: Any, names: list[str]) -> dict[str, dict[str, str]]:
    from kafka.admin import ConfigResource, ConfigResourceType

    if not names:
        return {}
    try:
        answer = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        )
    except Exception:  # a broker without DescribeConfigs: configs cannot be verified
        return {}
    per_topic = answer.get("topic", {}) if isinstance(answer, dict) else {}
    out: dict[str, dict[str, str]] = {}
    for name, configs in per_topic.items():
        out[name] = {
            k: str(v.get("value") if isinstance(v, dict) else v) for k, v in (configs or {}).items()
        }
    return out


def apply_topics(settings: Settings, specs: list[TopicSpec], admin: Any = None) -> ApplyReport:
    """Create missing topics; report drift between the spec and what the broker has."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    own_admin = admin is None
    admin = admin or admin_client(settings)
    report = ApplyReport()
    try:
        existing = set(admin.list_topics())
        wanted = {settings.topic(s.name): s for s in specs}
        missing = [full for full in wanted if full not in existing]
        for full in missing:
            spec = wanted[full]
            try:
                admin.create_topics(
                    [NewTopic(full, spec.partitions, spec.replication_factor, topic_configs=spec.configs)]
                )
                report.created.append(full)
            except TopicAlreadyExistsError:  # another process won the race: not an error
                report.existing.append(full)
        present = [full for full in wanted if full not in report.created]
        report.existing.extend(f for f in present if f not in report.existing)
        if present:
            described = {d["name"]: d for d in admin.describe_topics(present)}
            configs = _described_configs(admin, present)
            unverified = []
            for full in present:
                spec = wanted[full]
                desc = described.get(full)
                if desc is None:
                    report.drift.append(f"{full}: not described by the broker")
                    continue
                parts = desc.get("partitions") or []
                if len(parts) != spec.partitions:
                    report.drift.append(
                        f"{full}: partitions {len(parts)} on the broker, {spec.partitions} in the spec"
                    )
                replicas = {len(p.get("replica_nodes") or []) for p in parts}
                if replicas and replicas != {spec.replication_factor}:
                    report.drift.append(
                        f"{full}: replication factor {sorted(replicas)} on the broker, "
                        f"{spec.replication_factor} in the spec"
                    )
                actual = configs.get(full) or {}
                if not actual and spec.configs:
                    unverified.append(full)
                    continue
                for key, value in sorted(spec.configs.items()):
                    if key in actual and str(actual[key]) != value:
                        report.drift.append(
                            f"{full}: {key}={actual[key]} on the broker, {value} in the spec"
                        )
            if unverified:
                report.notes.append(
                    f"the broker reports no topic configs for {len(unverified)} topic(s); "
                    "configs were set at creation and cannot be verified here"
                )
        return report
    finally:
        if own_admin:
            admin.close()
