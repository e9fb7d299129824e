from lifecycle.schemas.catalog import ENVELOPE_FIELDS, load_catalog

CONTRACT_EVENT_TYPES = {
    "account.registered", "account.email_verified", "account.updated", "account.closure_requested",
    "account.closed", "account.processing_restricted", "account.processing_restored",
    "account.legal_hold_set", "account.legal_hold_released",
    "session.started", "session.file_transferred", "session.ended", "session.login_failed",
    "consent.cookies_granted", "consent.cookies_withdrawn", "consent.newsletter_subscribed",
    "consent.newsletter_unsubscribed", "analytics.page_viewed",
}
OUTPUT_RECORDS = {"SessionLog", "ConsentExpired", "DeletionOrder", "ErasureAck", "ErasureStatus",
                  "TrafficAggregate", "DeadLetter", "AccountProfile", "ConsentState"}


def test_every_contract_event_type_has_a_schema():
    assert CONTRACT_EVENT_TYPES <= set(load_catalog().event_types)


def test_every_output_record_has_a_schema():
    names = {r.short_name for r in load_catalog().records}
    assert OUTPUT_RECORDS <= names


def test_input_events_carry_the_envelope_first():
    for record in load_catalog().records:
        if record.is_input:
            assert [f["name"] for f in record.fields[: len(ENVELOPE_FIELDS)]] == list(ENVELOPE_FIELDS)


def test_optional_fields_are_null_first_with_null_default():
    for record in load_catalog().records:
        for field in record.fields:
            if isinstance(field["type"], list):
                assert field["type"][0] == "null" and field.get("default", "missing") is None, (
                    record.short_name, field["name"])


def test_input_topics_are_the_contract_ones():
    assert load_catalog().input_topics == ["account-events", "analytics-events", "consent-events", "session-events"]


def test_schema_ids_are_distinct_and_stable():
    records = load_catalog().records
    ids = [r.schema_id for r in records]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 2**31 for i in ids)


def test_the_ack_status_enum_mirrors_the_avro_enum():
    import json

    from lifecycle.core.config import PROJECT_ROOT
    from lifecycle.schemas.statuses import AckStatus

    schema = json.loads((PROJECT_ROOT / "schemas" / "avro" / "ErasureAck.avsc").read_text())
    status = next(f for f in schema["fields"] if f["name"] == "status")["type"]
    assert [s.value for s in AckStatus] == status["symbols"]
