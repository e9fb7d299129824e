import uuid

import pytest

from lifecycle.schemas.errors import InvalidEvent, ValidationFailed
from lifecycle.schemas.validate import MAX_STRING, check_event, from_json, subject_key


def _started(**over):
    event = {
        "event_id": str(uuid.uuid4()), "event_type": "session.started", "occurred_at": 1767225600000,
        "account_id": "acc-1", "source": "auth", "session_id": "s-1", "ip": "198.51.100.7",
        "login_method": "password",
    }
    event.update(over)
    return event


def _fields(exc):
    return {e.field for e in exc.value.errors}


def test_valid_event_gets_defaults_for_missing_optionals():
    record, value = from_json(_started())
    assert record.short_name == "SessionStarted"
    assert value["second_factor"] is None and value["visitor_id"] is None


def test_rfc3339_and_millis_give_the_same_time():
    _, a = from_json(_started(occurred_at="2026-01-01T00:00:00Z"))
    _, b = from_json(_started(occurred_at="2026-01-01T01:00:00+01:00"))
    assert a["occurred_at"] == b["occurred_at"] == 1767225600000


def test_each_bad_field_is_named_once():
    with pytest.raises(ValidationFailed) as info:
        from_json(_started(occurred_at="yesterday", session_id=5, login_method=None, colour="red"))
    assert _fields(info) == {"occurred_at", "session_id", "login_method", "colour"}


def test_missing_required_and_unknown_type():
    with pytest.raises(ValidationFailed) as info:
        from_json({k: v for k, v in _started().items() if k != "ip"})
    assert _fields(info) == {"ip"}
    with pytest.raises(ValidationFailed) as info:
        from_json(_started(event_type="session.teleported"))
    assert _fields(info) == {"event_type"}


@pytest.mark.parametrize("bad, field", [
    ({"event_id": "not-a-uuid"}, "event_id"),
    ({"account_id": None}, "account_id"),
    ({"session_id": "x" * (MAX_STRING + 1)}, "session_id"),
    ({"occurred_at": True}, "occurred_at"),
    ({"occurred_at": "2026-01-01T00:00:00"}, "occurred_at"),
])
def test_contract_rules(bad, field):
    with pytest.raises(ValidationFailed) as info:
        from_json(_started(**bad))
    assert field in _fields(info)


def test_enums_and_arrays():
    base = {"event_id": str(uuid.uuid4()), "event_type": "consent.cookies_granted", "occurred_at": 1767225600000,
            "visitor_id": "v-1", "source": "web", "policy_version": "2026-01"}
    _, value = from_json({**base, "purposes": ["analytics", "necessary"]})
    assert value["purposes"] == ["analytics", "necessary"]
    with pytest.raises(ValidationFailed) as info:
        from_json({**base, "purposes": ["telepathy"]})
    assert _fields(info) == {"purposes"}


def test_subject_key_is_account_else_visitor():
    record, value = from_json(_started())
    assert subject_key(record, value) == "acc-1"
    record, value = from_json({"event_id": str(uuid.uuid4()), "event_type": "analytics.page_viewed",
                               "occurred_at": 1767225600000, "visitor_id": "v-9", "source": "web", "path": "/"})
    assert subject_key(record, value) == "v-9"


def test_check_event_applies_the_same_rules_to_decoded_values():
    record, value = from_json(_started())
    value["event_type"] = "session.ended"
    with pytest.raises(InvalidEvent) as info:
        check_event(record, value)
    assert _fields(info) == {"event_type"}


def test_non_object_is_refused():
    with pytest.raises(ValidationFailed):
        from_json(["not", "an", "object"])


def test_times_outside_what_the_pipeline_can_have_seen_are_refused():
    with pytest.raises(ValidationFailed) as info:
        from_json(_started(occurred_at=946_684_799_999))
    assert _fields(info) == {"occurred_at"}
    now = 1767225600000
    from_json(_started(occurred_at=now + 1000), not_after_ms=now + 1000)
    with pytest.raises(ValidationFailed) as info:
        from_json(_started(occurred_at=now + 1001), not_after_ms=now + 1000)
    assert [e.problem for e in info.value.errors] == ["in the future beyond the allowed clock skew"]


@pytest.mark.parametrize("late", [7_258_118_400_000, 253_402_300_800_000, 2**63 - 1, "2200-01-01T00:00:00Z"])
def test_no_clock_accepts_a_time_from_2200_on(late):
    # On the event-time clock there is no skew bound; one event dated past year 9999 stopped
    # every tick of the worker (found by Schemathesis, tests/integration/http/test_openapi.py).
    with pytest.raises(ValidationFailed) as info:
        from_json(_started(occurred_at=late), not_after_ms=None)
    assert _fields(info) == {"occurred_at"}
    from_json(_started(occurred_at=7_258_118_399_999), not_after_ms=None)
