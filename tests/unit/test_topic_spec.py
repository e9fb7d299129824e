import pytest

from lifecycle.config import PROJECT_ROOT
from lifecycle.errors import TopicSpecError
from lifecycle.topics import ApplyReport, load_spec

CONTRACT_TOPICS = {
    "account-events", "session-events", "consent-events", "analytics-events", "accounts", "consents",
    "session-logs", "tombstones", "erasure-acks", "erasure-status", "traffic-aggregates", "dead-letters",
}


def test_spec_declares_every_contract_topic():
    specs = {s.name: s for s in load_spec(PROJECT_ROOT / "deploy" / "topics.yaml")}
    assert set(specs) == CONTRACT_TOPICS
    for name in ("accounts", "consents", "erasure-status"):
        assert specs[name].configs["cleanup.policy"] == "compact"
    for name in CONTRACT_TOPICS - {"accounts", "consents", "erasure-status"}:
        assert specs[name].configs["cleanup.policy"] == "delete"
        assert int(specs[name].configs["retention.ms"]) > 0


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
