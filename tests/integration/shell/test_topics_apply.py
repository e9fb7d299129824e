import dataclasses

import yaml

from lifecycle.topics import apply_topics, load_spec


def test_apply_twice_then_drift(servers, tmp_path):
    s = dataclasses.replace(servers, topic_prefix="apply-test.")
    specs = load_spec(s.topic_spec)
    first = apply_topics(s, specs)
    assert sorted(first.created) == sorted(s.topic(t.name) for t in specs)
    assert first.drift == []

    second = apply_topics(s, specs)
    assert second.created == []
    assert len(second.existing) == len(specs)
    assert second.drift == []

    raw = yaml.safe_load(s.topic_spec.read_text())
    raw["topics"]["session-events"]["partitions"] = 8
    raw["policy"] = str(s.retention_policy)
    changed = tmp_path / "topics.yaml"
    changed.write_text(yaml.safe_dump(raw))
    third = apply_topics(s, load_spec(changed))
    assert third.created == []
    assert third.drift == ["apply-test.session-events: partitions 4 on the broker, 8 in the spec"]


def test_topics_exist_with_spec_partitions_before_any_producer(settings):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        for spec in load_spec(settings.topic_spec):
            assert len(consumer.partitions_for_topic(settings.topic(spec.name)) or ()) == spec.partitions
    finally:
        consumer.close()
