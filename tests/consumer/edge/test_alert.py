from __future__ import annotations

import io
import json
from copy import deepcopy
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from consumer.edge.alert import (
    SCHEMA_HEADER,
    Alert,
    AlertDecoder,
    AlertFinderSummary,
    Classification,
    LightCurve,
    alert_id_for,
    alert_to_record,
    encode_alert,
    encode_record,
)
from consumer.edge.schemas import AvroSchema, SchemaRegistry, load_schema, read_record
from consumer.exceptions import DecodeError


def make_alert(n: int = 40) -> Alert:
    rng = np.random.default_rng(1)
    hjd = np.sort(2_460_100 + rng.uniform(0, 30, n))
    return Alert(
        alert_id=alert_id_for(123456789, float(hjd[-1])),
        star_id=123456789,
        field=2,
        chip=1,
        ra=268.5,
        dec=-29.9,
        trigger_hjd=float(hjd[-1]),
        published_at=datetime(2026, 5, 1, 3, 4, 5, 678000, tzinfo=UTC),
        alertfinder=AlertFinderSummary(
            sites=("CTIO", "SSO"),
            fields=(2, 2),
            t_break=float(hjd[20]),
            slope=35.0,
            dchi2=812.5,
            n_high=5,
            k=5,
            n=5,
        ),
        lensnet=Classification(
            model_version="lensnet-1.0.0",
            p_event=0.93,
            p_no=0.07,
            p_maybe=0.11,
            p_yes=0.82,
            site_scores={"CTIO": 0.9, "SAAO": 0.0, "SSO": 0.7},
        ),
        light_curve=LightCurve(
            site=rng.integers(0, 3, n).astype(np.uint8),
            field=np.full(n, 2, np.int16),
            hjd=hjd,
            flux=rng.normal(0, 10, n),
            flux_err=rng.uniform(1, 3, n),
            sky=rng.uniform(100, 900, n).astype(np.float32),
            fwhm=rng.uniform(1, 3, n).astype(np.float32),
            airmass=rng.uniform(1, 2, n).astype(np.float32),
            psf_quality=rng.uniform(0, 100, n).astype(np.float32),
            fitted=rng.normal(0, 10, n),
        ),
    )


def assert_same_alert(a: Alert, b: Alert) -> None:
    assert (a.alert_id, a.star_id, a.trigger_hjd, a.published_at) == (
        b.alert_id,
        b.star_id,
        b.trigger_hjd,
        b.published_at,
    )
    assert a.alertfinder == b.alertfinder
    assert a.lensnet == b.lensnet
    for name in LightCurve.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a.light_curve, name), getattr(b.light_curve, name))


def test_round_trip() -> None:
    alert = make_alert()
    value, headers = encode_alert(alert)
    assert_same_alert(AlertDecoder().decode(value, headers), alert)
    assert alert.lensnet.label == "YES"


def test_alert_id_is_deterministic() -> None:
    assert alert_id_for(42, 2460123.456789) == alert_id_for(42, 2460123.4567891)
    assert alert_id_for(42, 2460123.45678) != alert_id_for(43, 2460123.45678)


def newer_schema() -> AvroSchema:
    """A 1.1 alert: a new top-level field and a new light-curve column, both with defaults."""
    definition = deepcopy(load_schema("alert").definition)
    definition["version"] = "1.1"
    definition["fields"].append(
        {"name": "finder_chart_url", "type": ["null", "string"], "default": None}
    )
    light_curve = next(f for f in definition["fields"] if f["name"] == "light_curve")
    light_curve["type"]["items"]["fields"].append(
        {"name": "exposure_s", "type": "float", "default": 60.0}
    )
    return AvroSchema.from_definition(definition)


def test_old_reader_reads_a_newer_alert_from_its_header() -> None:
    newer = newer_schema()
    record: dict[str, Any] = alert_to_record(make_alert())
    record["finder_chart_url"] = "https://example.invalid/chart.png"
    for point in record["light_curve"]:
        point["exposure_s"] = 120.0
    value, headers = encode_record(newer, record)
    # A subscriber that ships only 1.0 has never seen this fingerprint: the header saves it.
    assert SchemaRegistry().get(newer.fingerprint) is None
    assert_same_alert(AlertDecoder().decode(value, headers), make_alert())


def test_newer_reader_reads_an_old_alert_with_defaults() -> None:
    newer = newer_schema()
    value, _ = encode_alert(make_alert())
    body = io.BytesIO(value[10:])
    record = read_record(body, load_schema("alert"), newer)
    assert record["finder_chart_url"] is None
    assert {point["exposure_s"] for point in record["light_curve"]} == {60.0}


def test_unknown_schema_without_header_is_a_decode_error() -> None:
    newer = newer_schema()
    record = alert_to_record(make_alert())
    value, _ = encode_record(newer, {**record, "finder_chart_url": None})
    with pytest.raises(DecodeError, match="unknown alert writer schema"):
        AlertDecoder().decode(value, [])


def test_header_that_does_not_match_the_fingerprint_is_refused() -> None:
    value, _ = encode_record(
        newer_schema(), {**alert_to_record(make_alert()), "finder_chart_url": None}
    )
    lying = [(SCHEMA_HEADER, json.dumps(load_schema("photometry").definition).encode())]
    with pytest.raises(DecodeError, match="does not match"):
        AlertDecoder().decode(value, lying)


def test_truncated_alert_is_a_decode_error() -> None:
    value, headers = encode_alert(make_alert())
    with pytest.raises(DecodeError):
        AlertDecoder().decode(value[:-30], headers)
