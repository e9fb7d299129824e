import pytest

from lifecycle.core.config import PROJECT_ROOT
from lifecycle.core.errors import TopicSpecError
from lifecycle.topics import ApplyReport, load_spec

CONTRACT_TOPICS = {
    "account-events", "session-events", "consent-events", "analytics-events", "accounts", "consents",
    "session-logs", "tombstones", "erasure-acks", "erasure-status", "traffic-aggregates", "dead-letters",
    "retention-orders", "access-orders", "request-notices",
}
COMPACTED = {"accounts", "consents", "erasure-status", "retention-orders"}


def test_spec_declares_every_contract_topic():
    specs = {s.name: s for s in load_spec(PROJECT_ROOT / "deploy" / "topics.yaml")}
    assert set(specs) == CONTRACT_TOPICS
    for name in COMPACTED:
        assert specs[name].configs["cleanup.policy"] == "compact"
    for name in CONTRACT_TOPICS - COMPACTED:
        assert specs[name].configs["cleanup.policy"] == "delete"
        assert int(specs[name].configs["retention.ms"]) > 0


def test_topic_retention_comes_from_the_retention_policy():
    specs = {s.name: s for s in load_spec(PROJECT_ROOT / "deploy" / "topics.yaml")}
    assert specs["analytics-events"].configs["retention.ms"] == str(7 * 86_400_000)
    assert specs["analytics-events"].configs["segment.ms"] == str(7 * 8_640_000)  # a tenth of the window
    assert specs["dead-letters"].configs["retention.ms"] == str(30 * 86_400_000)
    assert specs["accounts"].configs["max.compaction.lag.ms"] == str(86_400_000)
    assert specs["accounts"].configs["delete.retention.ms"] == str(86_400_000)


def test_retention_configs_written_in_the_spec_too_are_refused(tmp_path):
    (tmp_path / "retention.yaml").write_text((PROJECT_ROOT / "deploy" / "retention.yaml").read_text())
    path = tmp_path / "topics.yaml"
    path.write_text("policy: retention.yaml\ntopics:\n  a: {retention: dead_letters, configs: {retention.ms: '1'}}\n")
    with pytest.raises(TopicSpecError, match="come.s. from the retention policy"):
        load_spec(path)
    path.write_text("policy: retention.yaml\ntopics:\n  a: {retention: no_such_category}\n")
    with pytest.raises(TopicSpecError, match="not a category"):
        load_spec(path)


def test_input_topics_share_a_partition_count():
    specs = {s.name: s for s in load_spec(PROJECT_ROOT / "deploy" / "topics.yaml")}
    counts = {specs[t].partitions for t in ("account-events", "session-events", "consent-events",
                                              "analytics-events", "accounts", "consents")}
    assert len(counts) == 1


def test_production_profile_raises_replication():
    specs = load_spec(PROJECT_ROOT / "deploy" / "topics.yaml", "production")
    assert all(s.replication_factor == 3 and s.configs["min.insync.replicas"] == "2" for s in specs)


@pytest.mark.parametrize("text, needle", [
    ("topics: [1, 2]", "'topics' mapping"),
    ("topics:\n  a: {partitions: 0}", "topic a: partitions"),
    ("topics:\n  a: {partitons: 3}", "unknown key"),
    ("topics: {a: {}}\nprofiles: {}", None),
    ("topics: {a: [", "not valid YAML"),
])
def test_bad_specs_are_refused_with_the_topic_named(tmp_path, text, needle):
    path = tmp_path / "topics.yaml"
    path.write_text(text)
    if needle is None:
        assert load_spec(path)[0].name == "a"
        with pytest.raises(TopicSpecError, match="unknown profile"):
            load_spec(path, "production")
    else:
        with pytest.raises(TopicSpecError, match=needle):
            load_spec(path)


def test_report_lines():
    report = ApplyReport(created=["x"], existing=["y"], drift=["y: partitions 2 on the broker, 4 in the spec"])
    lines = report.lines()
    assert "created x" in lines and "1 drift(s)" in lines
    assert "no drift" in ApplyReport().lines()
