from __future__ import annotations

import io
from typing import Any

import fastavro
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.constants import SITES
from consumer.edge.photometry import (
    Observations,
    PhotometryBatch,
    PhotometryDecoder,
    column_dtypes,
    encode_batch,
)
from consumer.edge.schemas import AvroSchema, SchemaRegistry, frame, load_schema
from consumer.exceptions import DecodeError


def make_observations(n: int, seed: int = 0) -> Observations:
    rng = np.random.default_rng(seed)
    return Observations.from_columns(
        star_id=rng.integers(0, 10**12, n),
        field=rng.integers(1, 44, n),
        chip=rng.integers(0, 4, n),
        ra=rng.uniform(260, 275, n),
        dec=rng.uniform(-35, -25, n),
        x=rng.uniform(0, 9000, n),
        y=rng.uniform(0, 9000, n),
        hjd=2_460_000 + rng.uniform(0, 250, n),
        band=rng.integers(0, 2, n),
        flux=rng.normal(0, 1000, n),
        flux_err=rng.uniform(10, 100, n),
        sky=rng.uniform(500, 5000, n),
        fwhm=rng.uniform(0.8, 3.0, n),
        airmass=rng.uniform(1.0, 2.5, n),
        psf_quality=rng.uniform(0, 100, n),
    )


def assert_same(a: Observations, b: Observations) -> None:
    for name, dtype in column_dtypes().items():
        left, right = getattr(a, name), getattr(b, name)
        assert left.dtype == right.dtype == dtype, name
        np.testing.assert_array_equal(left, right, err_msg=name)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 3000), st.sampled_from(SITES), st.integers(0, 2**32 - 1))
def test_round_trip(n: int, site: str, seed: int) -> None:
    batch = PhotometryBatch(site, make_observations(n, seed), producer="test")
    decoded = PhotometryDecoder().decode(encode_batch(batch))
    assert decoded.site == site
    assert decoded.producer == "test"
    assert_same(decoded.observations, batch.observations)


def test_nan_and_inf_survive_the_wire() -> None:
    obs = make_observations(3)
    flux = obs.flux.copy()
    flux[:] = [np.nan, np.inf, -np.inf]
    batch = PhotometryBatch("SSO", Observations(**{**_columns(obs), "flux": flux}))
    decoded = PhotometryDecoder().decode(encode_batch(batch)).observations
    assert np.isnan(decoded.flux[0])
    assert decoded.flux[1] == np.inf
    assert decoded.flux[2] == -np.inf


def _columns(obs: Observations) -> dict[str, Any]:
    return {name: getattr(obs, name) for name in column_dtypes()}


def test_columns_must_share_a_length() -> None:
    columns = _columns(make_observations(4))
    columns["flux"] = columns["flux"][:3]
    with pytest.raises(ValueError, match="equal length"):
        Observations.from_columns(**columns)


def test_truncated_message_is_a_decode_error() -> None:
    message = encode_batch(PhotometryBatch("CTIO", make_observations(50)))
    with pytest.raises(DecodeError):
        PhotometryDecoder().decode(message[: len(message) // 2])


def test_column_length_mismatch_is_a_decode_error() -> None:
    schema = load_schema("photometry")
    record = {name: getattr(make_observations(5), name).tobytes() for name in column_dtypes()}
    record.update(site="CTIO", n=6, producer="")
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema.parsed, record)
    with pytest.raises(DecodeError, match="column 'star_id' holds 40 bytes, expected n=6"):
        PhotometryDecoder().decode(frame(schema, buffer.getvalue()))


def test_unknown_writer_schema_is_a_decode_error() -> None:
    other = AvroSchema.from_json('{"type": "record", "name": "Other", "fields": []}')
    with pytest.raises(DecodeError, match="unknown writer schema"):
        PhotometryDecoder().decode(frame(other, b""))


def test_an_alert_is_not_photometry() -> None:
    alert = load_schema("alert")
    with pytest.raises(DecodeError, match="expected a"):
        PhotometryDecoder().decode(frame(alert, b""))


def test_newer_minor_writer_with_an_extra_column_still_decodes() -> None:
    definition = dict(load_schema("photometry").definition)
    definition["version"] = "1.1"
    definition["fields"] = [
        *definition["fields"],
        {"name": "exposure_s", "type": "bytes", "dtype": "<f4", "default": ""},
    ]
    newer = AvroSchema.from_definition(definition)
    obs = make_observations(7)
    record: dict[str, Any] = {name: getattr(obs, name).tobytes() for name in column_dtypes()}
    record.update(site="SAAO", n=7, producer="", exposure_s=np.full(7, 60, "<f4").tobytes())
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, newer.parsed, record)
    registry = SchemaRegistry()
    registry.add(newer)
    decoded = PhotometryDecoder(registry).decode(frame(newer, buffer.getvalue()))
    assert_same(decoded.observations, obs)
