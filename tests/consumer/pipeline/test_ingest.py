"""Decoding, checking and cleaning a consumed batch: nothing lost, every reason named."""

from __future__ import annotations

from typing import Any

import numpy as np

from consumer.edge.keys import partitions_for
from consumer.edge.photometry import Observations, PhotometryBatch, PhotometryDecoder, encode_batch
from consumer.pipeline.ingest import (
    ROW_REASONS,
    ingest,
    max_hjd,
    row_reasons,
    row_reasons_numpy,
    sites_by_topic,
)

TOPICS = ("p.ctio", "p.saao", "p.sso")
PARTITIONS = 4


class FakeMessage:
    """What ingest reads of a confluent-kafka message."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._where = (topic, partition, offset)
        self._value = value

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


def observations(star_ids: np.ndarray[Any, Any], **columns: Any) -> Observations:
    n = len(star_ids)
    base: dict[str, Any] = {
        "star_id": star_ids,
        "field": np.full(n, 2),
        "chip": np.zeros(n),
        "ra": np.zeros(n),
        "dec": np.zeros(n),
        "x": np.zeros(n),
        "y": np.zeros(n),
        "hjd": 2_461_000.0 + np.arange(n) * 0.01,
        "band": np.zeros(n),
        "flux": np.full(n, 100.0),
        "flux_err": np.full(n, 5.0),
        "sky": np.full(n, 500.0),
        "fwhm": np.full(n, 1.5),
        "airmass": np.full(n, 1.3),
        "psf_quality": np.full(n, 80.0),
    }
    base.update(columns)
    return Observations.from_columns(**base)


def ids_in(partition: int, n: int) -> np.ndarray[Any, Any]:
    candidates = np.arange(1, 50 * n, dtype=np.int64)
    return candidates[partitions_for(candidates, PARTITIONS) == partition][:n]


def run(*messages: FakeMessage) -> Any:
    return ingest(
        list(messages), PhotometryDecoder(), sites_by_topic(TOPICS), PARTITIONS, now_s=1.8e9
    )


def test_clean_batch_passes_whole() -> None:
    obs = observations(ids_in(1, 20))
    result = run(FakeMessage("p.saao", 1, 7, encode_batch(PhotometryBatch("SAAO", obs))))
    assert result.dead_letters == []
    assert len(result.parts) == 1
    assert result.parts[0].site == "SAAO"
    assert len(result.parts[0].observations) == 20
    assert result.positions == {("p.saao", 1): 8}
    assert result.parts[0].timestamp_ms == 1_700_000_000_000


def test_rows_are_counted_per_partition_over_sites_and_messages() -> None:
    result = run(
        FakeMessage(
            "p.ctio", 1, 0, encode_batch(PhotometryBatch("CTIO", observations(ids_in(1, 5))))
        ),
        FakeMessage(
            "p.saao", 1, 0, encode_batch(PhotometryBatch("SAAO", observations(ids_in(1, 3))))
        ),
        FakeMessage(
            "p.ctio", 2, 0, encode_batch(PhotometryBatch("CTIO", observations(ids_in(2, 4))))
        ),
    )
    assert result.rows_by_partition() == {1: 8, 2: 4}


def test_undecodable_and_misplaced_messages_are_dead_letters() -> None:
    saao = encode_batch(PhotometryBatch("SAAO", observations(ids_in(0, 3))))
    result = run(
        FakeMessage("p.ctio", 0, 0, b"\x00garbage"),
        FakeMessage("p.ctio", 0, 1, saao),  # a SAAO batch on the CTIO topic
        FakeMessage("p.ctio", 0, 2, saao[:-5]),  # truncated
    )
    assert [letter.reason for letter in result.dead_letters] == ["undecodable"] * 3
    assert [letter.offset for letter in result.dead_letters] == [0, 1, 2]
    assert result.dead_letters[0].value == b"\x00garbage"
    assert result.positions == {("p.ctio", 0): 3}
    assert result.parts == []


def test_bad_rows_are_split_out_by_reason_and_the_rest_kept() -> None:
    ids = ids_in(2, 10)
    flux = np.full(10, 100.0)
    flux[0] = np.nan
    err = np.full(10, 5.0)
    err[1] = 0.0
    psf = np.full(10, 80.0)
    psf[2] = 140.0
    psf[3] = np.nan  # missing: kept
    hjd = 2_461_000.0 + np.arange(10.0)
    hjd[4] = 2_470_000.0  # after 2027: in the future for now_s = 1.8e9 (2027-01)
    band = np.zeros(10)
    band[5] = 1  # V band: dropped, not dead-lettered
    ids[6] = ids_in(3, 1)[0]  # belongs to partition 3
    obs = observations(ids, flux=flux, flux_err=err, psf_quality=psf, hjd=hjd, band=band)
    result = run(FakeMessage("p.sso", 2, 0, encode_batch(PhotometryBatch("SSO", obs))))
    reasons = {letter.reason: letter.rows for letter in result.dead_letters}
    assert reasons == {
        "non_finite": 1,
        "bad_flux_err": 1,
        "bad_psf_quality": 1,
        "bad_time": 1,
        "wrong_partition": 1,
    }
    assert result.v_band == 1
    assert len(result.parts[0].observations) == 4
    decoder = PhotometryDecoder()
    for letter in result.dead_letters:  # dead letters hold the rows, re-encoded
        assert len(decoder.decode(letter.value).observations) == letter.rows
        headers = dict(letter.headers())
        assert headers["lensnet.dlq.reason"] == letter.reason.encode()
        assert headers["lensnet.dlq.topic"] == b"p.sso"


def test_first_matching_rule_names_a_row() -> None:
    obs = observations(ids_in(0, 1), flux=[np.nan], flux_err=[-1.0])
    codes = row_reasons(obs, 0, PARTITIONS, max_hjd(1.8e9))
    assert ROW_REASONS[int(codes[0]) - 1] == "non_finite"


def test_compiled_rules_equal_the_numpy_reference() -> None:
    """Every rule and their overlaps, on random rows with NaN, infinities and edge values."""
    rng = np.random.default_rng(5)
    n = 20_000

    def spoil(values: Any, bad: list[float]) -> Any:
        values = np.asarray(values, dtype=np.float64)
        pick = rng.uniform(size=n) < 0.08
        values[pick] = rng.choice(bad, size=int(pick.sum()))
        return values

    obs = Observations.from_columns(
        star_id=rng.integers(-(2**62), 2**62, n),
        field=rng.integers(0, 50, n),
        chip=rng.integers(0, 4, n),
        ra=np.zeros(n),
        dec=np.zeros(n),
        x=np.zeros(n),
        y=np.zeros(n),
        hjd=spoil(rng.uniform(2_461_000.0, 2_461_200.0, n), [np.nan, np.inf, 2_449_999.0, 3e6]),
        band=rng.choice([0, 0, 0, 1, 2], size=n),
        flux=spoil(rng.normal(size=n), [np.nan, -np.inf]),
        flux_err=spoil(rng.uniform(0.1, 1.0, n), [0.0, -1.0, np.nan]),
        sky=spoil(rng.uniform(0, 1000, n), [-1.0, np.nan]),
        fwhm=spoil(rng.uniform(0, 5, n), [-0.1, np.nan]),
        airmass=spoil(rng.uniform(1, 2, n), [0.99, np.nan]),
        psf_quality=spoil(rng.uniform(0, 100, n), [-1.0, 100.5, np.nan]),
    )
    for partition in range(PARTITIONS):
        expected = row_reasons_numpy(obs, partition, PARTITIONS, max_hjd(1.8e9))
        got = row_reasons(obs, partition, PARTITIONS, max_hjd(1.8e9))
        assert got.tolist() == expected.tolist()
    assert len(set(got.tolist())) == len(ROW_REASONS) + 1  # every rule, and usable rows
