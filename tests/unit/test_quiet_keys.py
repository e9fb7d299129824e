"""Which data keys may be deleted when quiet, and after how long (streams/ingest/quietkeys.py), derived
from what deploy/topics.yaml keeps and what the data map says each topic carries."""

from __future__ import annotations

from lifecycle.core.config import PROJECT_ROOT, Settings
from lifecycle.core.policy import load_policy
from lifecycle.core.timeutil import DAY_MS
from lifecycle.schemas.catalog import load_catalog
from lifecycle.schemas.personal import datamap
from lifecycle.streams.ingest.quietkeys import (
    KEPT_WHILE_SUBJECT_EXISTS,
    SEALED_IN_LOG,
    quiet_categories,
    quiet_key_window_ms,
)
from lifecycle.topics import load_spec


def _carried() -> tuple[dict[str, set[str]], dict[str, object]]:
    policy = load_policy(Settings.from_env({}).retention_policy)
    by_topic: dict[str, set[str]] = {}
    for row in datamap(load_catalog(), policy):
        by_topic.setdefault(row["topic"], set()).add(row["category"])
    return by_topic, {spec.name: spec for spec in load_spec(PROJECT_ROOT / "deploy" / "topics.yaml")}


def test_the_window_covers_every_delete_topic_that_carries_a_sealed_value():
    by_topic, specs = _carried()
    holding = {specs[t].retention for t in by_topic if specs[t].configs["cleanup.policy"] == "delete"}
    holding.add(specs["dead-letters"].retention)  # a letter keeps an input record's bytes, sealed values and all
    assert holding == set(SEALED_IN_LOG)


def test_a_category_a_compacted_topic_carries_keeps_its_keys_while_its_subject_exists():
    by_topic, specs = _carried()
    compacted = {c for t, cats in by_topic.items() if specs[t].configs["cleanup.policy"] == "compact" for c in cats}
    assert compacted == set(KEPT_WHILE_SUBJECT_EXISTS)
    policy = load_policy(Settings.from_env({}).retention_policy)
    assert not compacted & set(quiet_categories(policy))
    assert {"session_logs", "security_information", "raw_analytics_events", "newsletter_audience",
            "dead_letters"} <= set(quiet_categories(policy))


def test_the_window_is_the_longest_of_them_plus_its_last_segment_and_a_day():
    policy = load_policy(Settings.from_env({}).retention_policy)
    assert quiet_key_window_ms(policy) == (30 + 3 + 1) * DAY_MS
