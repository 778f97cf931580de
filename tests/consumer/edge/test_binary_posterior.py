"""Alert schema 1.3: the optional binary-lens posterior record, FULL-compatible with 1.0, 1.1
and 1.2 in both directions."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from consumer.edge.alert import AlertDecoder, alert_to_record, encode_alert, encode_record
from consumer.edge.binary_posterior import (
    PARAMETERS,
    BinaryPosterior,
    ParameterSummary,
    SeparationMode,
)
from consumer.edge.schemas import AvroSchema, SchemaRegistry, load_schema, read_record
from tests.consumer.edge.test_alert import assert_same_alert, make_alert

DATA = Path(__file__).parent / "data"
#: Frozen copies of the released alert schemas: what older subscribers ship.
OLDER = pytest.mark.parametrize(
    "old",
    [AvroSchema.from_json((DATA / f"alert-v1.{m}.avsc").read_text()) for m in (0, 1, 2)],
    ids=["1.0", "1.1", "1.2"],
)


def make_posterior(log_q_width: float = 0.2) -> BinaryPosterior:
    parameters = tuple(
        ParameterSummary(name, 1.0 + i, 0.5 + i, 1.5 + i, 0.9) for i, name in enumerate(PARAMETERS)
    )
    parameters = tuple(
        dataclasses.replace(
            p, median=-2.5, p16=-2.5 - log_q_width, p84=-2.5 + log_q_width, prior_fraction=0.15
        )
        if p.name == "log_q"
        else p
        for p in parameters
    )
    return BinaryPosterior(
        model_version="20ae99ca43",
        n_samples=1000,
        fitted_to_hjd=2457600.25,
        parameters=parameters,
        s_modes=(SeparationMode("wide", 0.7, 1.6), SeparationMode("close", 0.3, 0.62)),
        constrained_below=0.5,
    )


def test_schema_is_a_new_minor_version() -> None:
    assert load_schema("alert").version == "1.3"
    assert make_alert().schema_version == "1.3"


def test_round_trip_with_the_posterior() -> None:
    alert = dataclasses.replace(make_alert(), binary_posterior=make_posterior())
    value, headers = encode_alert(alert)
    decoded = AlertDecoder().decode(value, headers)
    assert_same_alert(decoded, alert)
    assert decoded.binary_posterior == alert.binary_posterior
    assert decoded.binary_posterior is not None
    assert decoded.binary_posterior.constrained("log_q")
    assert not decoded.binary_posterior.constrained("alpha")
    assert decoded.binary_posterior.parameter("log_q").median == -2.5


def test_the_record_carries_the_log_q_flag() -> None:
    record = alert_to_record(dataclasses.replace(make_alert(), binary_posterior=make_posterior()))
    assert record["binary_posterior"]["log_q_constrained"] is True
    assert [p["name"] for p in record["binary_posterior"]["parameters"]] == list(PARAMETERS)


def test_round_trip_without_it() -> None:
    value, headers = encode_alert(make_alert())
    assert AlertDecoder().decode(value, headers).binary_posterior is None


def test_an_unknown_parameter_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        make_posterior().parameter("log_pi_E")


@OLDER
def test_an_older_reader_skips_the_posterior(old: AvroSchema) -> None:
    """Backward direction of FULL: the old reader skips the new field."""
    alert = dataclasses.replace(make_alert(), binary_posterior=make_posterior())
    value, _ = encode_alert(alert)
    record = read_record(io.BytesIO(value[10:]), load_schema("alert"), old)
    assert "binary_posterior" not in record
    assert record["lensnet"] == alert_to_record(make_alert())["lensnet"]


@OLDER
def test_an_older_subscriber_decodes_a_1_3_alert_from_its_header(old: AvroSchema) -> None:
    value, headers = encode_alert(
        dataclasses.replace(make_alert(), binary_posterior=make_posterior())
    )
    decoder = AlertDecoder(registry=SchemaRegistry([old]))
    decoder._reader = old  # the reader schema such a subscriber ships
    assert_same_alert(decoder.decode(value, headers), make_alert())


@OLDER
def test_a_1_3_reader_reads_an_older_alert_with_a_null_posterior(old: AvroSchema) -> None:
    """Forward direction of FULL: the new field takes its default."""
    record = alert_to_record(make_alert())
    del record["binary_posterior"]
    value, headers = encode_record(old, record)
    decoded = AlertDecoder().decode(value, headers)
    assert decoded.binary_posterior is None
    assert_same_alert(decoded, make_alert())


def test_the_new_field_is_optional_with_a_default() -> None:
    fields = {f["name"]: f for f in load_schema("alert").definition["fields"]}
    older = {f["name"] for f in AvroSchema.from_json((DATA / "alert-v1.2.avsc").read_text())
             .definition["fields"]}  # fmt: skip
    assert set(fields) - older == {"binary_posterior"}
    assert fields["binary_posterior"]["default"] is None
    assert fields["binary_posterior"]["type"][0] == "null"
