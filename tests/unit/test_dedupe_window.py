"""The deduplication window is derived from what can deliver an applied event again
(streams/ingest/dedupe.py): the input topics and the dead letters, as deploy/topics.yaml keeps them."""

from __future__ import annotations

from lifecycle.core.config import PROJECT_ROOT, Settings
from lifecycle.core.policy import load_policy
from lifecycle.core.timeutil import DAY_MS
from lifecycle.schemas.catalog import load_catalog
from lifecycle.streams.ingest.dedupe import REDELIVERABLE, dedupe_window_ms
from lifecycle.topics import load_spec


def test_the_window_covers_every_topic_that_can_deliver_an_event_again():
    kept = {spec.name: spec.retention for spec in load_spec(PROJECT_ROOT / "deploy" / "topics.yaml")}
    redeliverable = {kept[t] for t in [*load_catalog().input_topics, "dead-letters"]}
    assert redeliverable == set(REDELIVERABLE)


def test_the_window_is_the_longest_of_them_plus_its_last_segment_and_a_day():
    policy = load_policy(Settings.from_env({}).retention_policy)
    assert policy.categories["raw_events"].window.approx_ms() == 30 * DAY_MS  # what the figure below assumes
    assert dedupe_window_ms(policy) == (30 + 3 + 1) * DAY_MS  # segment.ms: a tenth of 30 days
