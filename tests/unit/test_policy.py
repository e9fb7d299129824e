"""The retention policy file: the shipped one is valid and follows the privacy policy; a broken
one is refused with the line and the problem."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from lifecycle.core.config import PROJECT_ROOT
from lifecycle.core.errors import PolicyError
from lifecycle.core.policy import CATEGORIES, Window, load_policy
from lifecycle.core.timeutil import DAY_MS, dt_to_ms

SHIPPED = PROJECT_ROOT / "deploy" / "retention.yaml"


def test_shipped_policy_covers_every_category_with_the_policy_windows():
    policy = load_policy(SHIPPED)
    assert set(policy.categories) == set(CATEGORIES)
    assert str(policy.categories["consent_history"].window) == "13 months"  # "13 months from the consent"
    assert policy.categories["account_profile"].starts == "account_closure"  # "as long as your account is active"
    billing = policy.categories["billing_records"]
    assert billing.at_closure == "pseudonymise" and billing.legal_hold
    assert "billing_records" not in policy.erased_at_closure(legal_hold=False)
    assert "billing_records" in policy.pseudonymised_at_closure(legal_hold=False)
    held = policy.erased_at_closure(legal_hold=True)
    assert "session_logs" not in held and "account_profile" in held
    assert "billing_records" not in policy.pseudonymised_at_closure(legal_hold=True)


def test_calendar_windows_cut_at_the_same_instant_months_earlier():
    now = dt_to_ms(dt.datetime(2027, 3, 31, 12, tzinfo=dt.UTC))
    assert Window(13, "months").cutoff(now) == dt_to_ms(dt.datetime(2026, 2, 28, 12, tzinfo=dt.UTC))
    assert Window(10, "years").cutoff(now) == dt_to_ms(dt.datetime(2017, 3, 31, 12, tzinfo=dt.UTC))
    assert Window(7, "days").cutoff(now) == now - 7 * DAY_MS


def _with(tmp_path, old: str, new: str) -> str:
    text = SHIPPED.read_text()
    assert old in text
    path = tmp_path / "retention.yaml"
    path.write_text(text.replace(old, new, 1))
    return str(path)


def _line_of(path: str, needle: str) -> int:
    return next(i for i, line in enumerate(Path(path).read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize("old, new, needle, problem", [
    ("  session_logs:  ", "  sesion_logs:  ", "sesion_logs:", "unknown category 'sesion_logs'"),
    ("    window: 12 months\n", "    window: -3 months\n", "-3 months", "is negative"),
    ("    window: 30 days\n", "    window: 30 fortnights\n", "30 fortnights", "unknown unit"),
    ("    window: 7 days\n    starts: event_time\n    action: erase\n",
     "    window: 7 days\n    starts: event_time\n", "raw_analytics_events:", "missing 'action'"),
    ("    action: erase\n    legal_hold: true\n", "    action: shred\n    legal_hold: true\n", "action: shred",
     "'shred' is not one of erase, pseudonymise"),
    ("    starts: consent_time\n", "    starts: whenever\n", "whenever", "'whenever' is not one of"),
    ("    legal_hold: false\n", "    legal_hold: maybe\n", "legal_hold: maybe", "true or false"),
    ("    window: 0 days\n    starts: account_closure\n", "    window: 3 days\n    starts: account_closure\n",
     "window: 3 days", "must be 0"),
    ("sweep_every: 1 hour", "sweep_evry: 1 hour", "sweep_evry", "unknown key 'sweep_evry'"),
    ("    legal_hold: true\n", "    legal_hold: true\n    keep_forever: true\n", "keep_forever", "unknown key"),
])
def test_invalid_policies_are_refused_naming_the_line(tmp_path, old, new, needle, problem):
    path = _with(tmp_path, old, new)
    with pytest.raises(PolicyError) as caught:
        load_policy(Path(path))
    message = str(caught.value)
    assert problem in message
    assert f"{path}:{_line_of(path, needle)}:" in message


def test_a_missing_category_and_bad_yaml_are_refused(tmp_path):
    text = SHIPPED.read_text()
    start = text.index("  dead_letters:")
    path = tmp_path / "retention.yaml"
    path.write_text(text[:start] + text[text.index("\ncompaction:"):])
    with pytest.raises(PolicyError, match="no window for dead_letters"):
        load_policy(path)
    path.write_text("categories: {session_logs: [\n")
    with pytest.raises(PolicyError, match=r"retention.yaml:\d+: not valid YAML"):
        load_policy(path)
