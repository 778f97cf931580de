"""Alert schema 1.2: the optional novelty and second-opinion records, FULL-compatible with 1.0
and 1.1 (the event model's version) in both directions."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from consumer.edge.alert import Alert, AlertDecoder, alert_to_record, encode_alert, encode_record
from consumer.edge.opinions import NoveltyScore, SecondOpinion, agreement
from consumer.edge.schemas import AvroSchema, SchemaRegistry, load_schema, read_record
from tests.consumer.edge.test_alert import assert_same_alert, make_alert

#: The alert schema as released in 1.0 and 1.1 (frozen copies: what older subscribers ship).
SCHEMA_1_0 = AvroSchema.from_json((Path(__file__).parent / "data" / "alert-v1.0.avsc").read_text())
SCHEMA_1_1 = AvroSchema.from_json((Path(__file__).parent / "data" / "alert-v1.1.avsc").read_text())
SCHEMA_1_2 = AvroSchema.from_json((Path(__file__).parent / "data" / "alert-v1.2.avsc").read_text())
OLDER = pytest.mark.parametrize("old", [SCHEMA_1_0, SCHEMA_1_1], ids=["1.0", "1.1"])


def opinionated_alert() -> Alert:
    return dataclasses.replace(
        make_alert(),
        novelty=NoveltyScore("abc1234567", 41.5, 12.25, True, "mira"),
        second_opinion=SecondOpinion("def7654321", 0.31, 0.69, 0.2, 0.11),
    )


def test_schema_is_a_new_minor_version() -> None:
    assert (SCHEMA_1_0.version, SCHEMA_1_1.version) == ("1.0", "1.1")
    assert SCHEMA_1_2.version == "1.2"
    assert SCHEMA_1_2.fingerprint not in (SCHEMA_1_0.fingerprint, SCHEMA_1_1.fingerprint)


def test_round_trip_with_both_records() -> None:
    alert = opinionated_alert()
    value, headers = encode_alert(alert)
    decoded = AlertDecoder().decode(value, headers)
    assert_same_alert(decoded, alert)
    assert (decoded.novelty, decoded.second_opinion) == (alert.novelty, alert.second_opinion)
    assert decoded.second_opinion is not None
    assert decoded.second_opinion.label == "NO"
    assert agreement(decoded.lensnet.p_event, decoded.second_opinion) == pytest.approx(0.38)


def test_round_trip_without_them() -> None:
    alert = make_alert()
    value, headers = encode_alert(alert)
    decoded = AlertDecoder().decode(value, headers)
    assert decoded.novelty is None
    assert decoded.second_opinion is None
    assert agreement(decoded.lensnet.p_event, None) is None


@OLDER
def test_an_older_reader_reads_a_1_2_alert(old: AvroSchema) -> None:
    """Backward direction of FULL: the old reader skips the new fields."""
    alert = opinionated_alert()
    value, _ = encode_alert(alert)
    record = read_record(io.BytesIO(value[10:]), load_schema("alert"), old)
    assert "novelty" not in record
    assert "second_opinion" not in record
    assert record["lensnet"] == alert_to_record(make_alert())["lensnet"]


@OLDER
def test_an_older_subscriber_decodes_a_1_2_alert_from_its_header(old: AvroSchema) -> None:
    """What a subscriber that ships only 1.0 or 1.1 does: the writer schema comes from the
    header."""
    value, headers = encode_alert(opinionated_alert())
    decoder = AlertDecoder(registry=SchemaRegistry([old]))
    decoder._reader = old  # the reader schema such a subscriber ships
    decoded = decoder.decode(value, headers)
    assert_same_alert(decoded, make_alert())


@OLDER
def test_a_1_2_reader_reads_an_older_alert_with_defaults(old: AvroSchema) -> None:
    """Forward direction of FULL: the new fields take their defaults (null)."""
    record = alert_to_record(make_alert())
    del record["novelty"], record["second_opinion"]
    value, headers = encode_record(old, record)
    decoded = AlertDecoder().decode(value, headers)
    assert decoded.novelty is None
    assert decoded.second_opinion is None
    assert_same_alert(decoded, make_alert())


def test_new_fields_are_optional_with_defaults() -> None:
    fields = {f["name"]: f for f in load_schema("alert").definition["fields"]}
    old = {f["name"] for f in SCHEMA_1_0.definition["fields"]}
    added = set(fields) - old
    assert {"event_model", "novelty", "second_opinion"} <= added
    assert {f["name"] for f in SCHEMA_1_2.definition["fields"]} - {
        f["name"] for f in SCHEMA_1_1.definition["fields"]
    } == {"novelty", "second_opinion"}
    for name in added:
        assert "default" in fields[name], name
        assert fields[name]["type"][0] == "null", name


def test_filters_on_novelty_and_agreement() -> None:
    """``alerts tail --unusual / --min-agreement``: alerts without the records never pass."""
    from consumer.edge.subscribe import AlertFilter

    flagged = opinionated_alert()  # LensNet 0.93 (make_alert), second opinion 0.31
    plain = make_alert()
    usual = dataclasses.replace(
        flagged,
        novelty=NoveltyScore("abc1234567", 1.0, 12.25, False, "pspl"),
        second_opinion=SecondOpinion("def7654321", 0.9, 0.1, 0.2, 0.7),
    )
    unusual = AlertFilter(unusual=True)
    assert [unusual(a) for a in (flagged, plain, usual)] == [True, False, False]
    agreeing = AlertFilter(min_agreement=0.9)
    assert [agreeing(a) for a in (flagged, plain, usual)] == [False, False, True]
    assert AlertFilter()(plain)
    assert AlertFilter(min_agreement=0.0)(flagged)


def test_the_alert_table_shows_the_flag_and_the_second_opinion() -> None:
    from consumer.cli import alert_row, alert_summary

    row = alert_row(opinionated_alert()).split()
    assert row[-3:-1] == ["!", "0.310"]
    summary = alert_summary(opinionated_alert())
    assert summary["novelty"]["unusual"] is True
    assert summary["agreement"] == pytest.approx(1 - abs(0.93 - 0.31))
