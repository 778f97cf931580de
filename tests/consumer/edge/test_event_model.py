"""The event model in alerts (schema 1.1) and on the events topic: round trips and FULL
compatibility with 1.0 readers and writers."""

from __future__ import annotations

import io
from copy import deepcopy
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumer.edge.alert import AlertDecoder, alert_to_record, encode_alert, encode_record
from consumer.edge.event_model import AnomalyRun, DatasetModel, EventModel
from consumer.edge.events import (
    SEQUENCE_HEADER,
    EventDecoder,
    EventUpdate,
    encode_update,
)
from consumer.edge.schemas import AvroSchema, SchemaRegistry, load_schema, read_record
from consumer.exceptions import DecodeError
from tests.consumer.edge.test_alert import assert_same_alert, make_alert


def make_model(anomaly: bool = True) -> EventModel:
    return EventModel(
        fitted_to_hjd=2_460_130.2,
        t0=2_460_134.5,
        t0_err=0.8,
        u0=0.12,
        u0_err=0.03,
        tE=21.0,
        tE_err=4.0,
        peak_hjd=2_460_134.5,
        peak_hjd_err=0.8,
        peak_magnification=8.4,
        peak_magnification_err=2.0,
        peak_mag=16.1,
        peak_mag_err=0.2,
        source_mag=18.4,
        peak_seen=False,
        chi2=812.0,
        dof=790,
        converged=True,
        reference_dataset=0,
        datasets=(
            DatasetModel("CTIO", 2, 2500.0, 300.0, -40.0, 20.0, 400, 1.2),
            DatasetModel("SSO", 2, 2450.0, None, -10.0, None, 380, 1.0),
        ),
        anomaly=AnomalyRun(2_460_130.0, 2_460_130.2, 4, ("CTIO", "SSO"), 1, 6.5, 90.0)
        if anomaly
        else None,
        peak_hjd_lower=2_460_134.1,
        peak_hjd_upper=None,
    )


def schema_without_event_model() -> AvroSchema:
    """The alert schema as version 1.0 had it (the frozen copy older subscribers ship)."""
    return AvroSchema.from_json((Path(__file__).parent / "data" / "alert-v1.0.avsc").read_text())


@pytest.mark.parametrize("anomaly", [True, False])
def test_alert_round_trip_with_the_event_model(anomaly: bool) -> None:
    alert = replace(make_alert(), event_model=make_model(anomaly))
    value, headers = encode_alert(alert)
    decoded = AlertDecoder().decode(value, headers)
    assert_same_alert(decoded, alert)
    assert decoded.event_model == alert.event_model
    assert decoded.schema_version == load_schema("alert").version


def test_a_1_0_alert_decodes_with_no_event_model() -> None:
    old = schema_without_event_model()
    record = {k: v for k, v in alert_to_record(make_alert()).items() if k != "event_model"}
    record["schema_version"] = "1.0"
    value, headers = encode_record(old, record)
    decoded = AlertDecoder().decode(value, headers)
    assert decoded.event_model is None
    assert_same_alert(decoded, make_alert())


def test_a_1_0_reader_reads_a_1_1_alert() -> None:
    alert = replace(make_alert(), event_model=make_model())
    value, _ = encode_alert(alert)
    record = read_record(io.BytesIO(value[10:]), load_schema("alert"), schema_without_event_model())
    assert "event_model" not in record
    assert record["alert_id"] == alert.alert_id
    # and the 1.0 reader's own decoder, knowing only 1.0, reads it from the header
    value, headers = encode_alert(alert)
    decoder = AlertDecoder(SchemaRegistry([schema_without_event_model()]))
    assert decoder.decode(value, headers).alert_id == alert.alert_id


def test_another_optional_sibling_field_merges_cleanly() -> None:
    """A later 1.x adds its own optional record beside event_model (as 1.2's novelty did)."""
    definition = deepcopy(load_schema("alert").definition)
    definition["version"] = "1.3"
    definition["fields"].append(
        {
            "name": "future_scores",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "FutureScores",
                    "fields": [{"name": "score", "type": "double"}],
                },
            ],
            "default": None,
        }
    )
    newer = AvroSchema.from_definition(definition)
    alert = replace(make_alert(), event_model=make_model())
    record: dict[str, Any] = alert_to_record(alert) | {"future_scores": {"score": 0.3}}
    value, headers = encode_record(newer, record)
    decoded = AlertDecoder().decode(value, headers)
    assert decoded.event_model == alert.event_model


def test_event_schema_and_alert_schema_define_the_same_event_model() -> None:
    def event_model_type(definition: dict[str, Any]) -> Any:
        field = next(f for f in definition["fields"] if f["name"] == "event_model")
        types = field["type"]
        return next(t for t in types if isinstance(t, dict)) if isinstance(types, list) else types

    assert event_model_type(load_schema("alert").definition) == event_model_type(
        load_schema("event").definition
    )


def make_update(sequence: int = 3) -> EventUpdate:
    return EventUpdate(
        event_id="KMT-123456789-2460120.00000",
        star_id=123456789,
        sequence=sequence,
        kind="ANOMALY",
        reason="anomaly: 4 points from CTIO, SSO up to 6.5 sigma",
        field=2,
        ra=268.5,
        dec=-29.9,
        alert_hjd=2_460_120.0,
        published_at=datetime(2026, 5, 1, 3, 4, 5, 678000, tzinfo=UTC),
        sites=("CTIO", "SSO"),
        event_model=make_model(),
    )


def test_update_round_trip_and_sequence_header() -> None:
    update = make_update()
    value, headers = encode_update(update)
    assert dict(headers)[SEQUENCE_HEADER] == b"3"
    assert EventDecoder().decode(value, headers) == update


def test_truncated_update_is_a_decode_error() -> None:
    value, headers = encode_update(make_update())
    with pytest.raises(DecodeError):
        EventDecoder().decode(value[:-20], headers)
