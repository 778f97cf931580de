"""The scoring stage's candidates, read from the store in one pass, against the star-by-star
path they replace: each star's buffers as an archive ``Star``, then ``prepare``."""

from __future__ import annotations

import numpy as np
import pytest

from consumer.alertfinder.api import HIGH_CADENCE
from consumer.constants import SITES
from consumer.pipeline.scoring import Pending, Scorer, dataset_table
from consumer.pointlens.fit import magnification
from consumer.pointlens.gate import MIN_PEAK_MAGNIFICATION
from consumer.seasons.archive import Dataset, Star, to_observations
from consumer.settings import BinarySettings, ModelSettings, OpinionSettings
from consumer.state.store import StarStore, StoreConfig
from model.batch_features import DatasetTable, prepare_batch
from model.features import Candidate, prepare
from model.simulate import SimulationConfig, simulate_star
from tests.model.test_batch_features import same_candidate


def star_from_store(store: StarStore, star_id: int) -> Star:
    """The reference: the star's decoded buffers, one dataset per site and field tag."""
    datasets = []
    for site, series in zip(SITES, store.features(star_id), strict=True):
        for tag in np.unique(series.field).tolist():
            rows = series.field == tag
            datasets.append(
                Dataset(
                    site=site,
                    field=int(tag),
                    hjd=series.hjd[rows],
                    flux=series.flux[rows],
                    flux_err=series.flux_err[rows],
                    sky=series.sky[rows].astype(np.float32),
                    fwhm=series.fwhm[rows].astype(np.float32),
                    airmass=series.airmass[rows].astype(np.float32),
                    psf_quality=series.psf_quality[rows].astype(np.float32),
                    band=np.zeros(int(rows.sum()), dtype=np.uint8),
                )
            )
    return Star(star_id, str(star_id), np.nan, np.nan, -1, np.nan, np.nan, tuple(datasets))


@pytest.fixture(scope="module")
def store() -> StarStore:
    """40 simulated stars (some in two fields, some seen by one or two sites), 300 points per
    site at most so that buffers wrap."""
    config = SimulationConfig(n_stars=40, seed=9, overlap_fraction=0.8, bad_point_fraction=0.03)
    store = StarStore(StoreConfig(capacity_per_site=300))
    for index in range(40):
        star, _ = simulate_star(config, index)
        for site, observations in to_observations(star).items():
            store.append(site, observations)
    return store


def test_datasets_are_the_decoded_buffers(store: StarStore) -> None:
    ids = store.star_ids[::-1].copy()
    got = dataset_table(store, ids)
    expected = DatasetTable.from_stars([star_from_store(store, int(s)) for s in ids])
    assert got.names == expected.names
    for name in ("star_offsets", "dataset_site", "dataset_field", "dataset_offsets"):
        assert getattr(got, name).tolist() == getattr(expected, name).tolist(), name
    for name in ("hjd", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality", "band"):
        a, b = getattr(got, name), getattr(expected, name)
        assert a.dtype == b.dtype, name
        assert a.tobytes() == b.tobytes(), name
    assert (np.diff(got.star_offsets) > 3).any()  # two fields at some site


def test_candidates_equal_the_star_by_star_path(store: StarStore) -> None:
    ids = store.star_ids
    prepared = prepare_batch(dataset_table(store, ids), [HIGH_CADENCE] * len(ids))
    candidates = 0
    for star_id, result in zip(ids.tolist(), prepared, strict=True):
        expected = prepare(star_from_store(store, star_id), rule=HIGH_CADENCE)
        assert isinstance(result, Candidate)
        same_candidate(result, expected)
        candidates += 1
    assert candidates == len(ids)


def _rising_star(star_id: int, rng: np.random.Generator, *, u0: float | None) -> Star:
    """Three sites, 6 points a night for 40 nights, errors 20 flux units: a point-lens event
    (tE 15 d, source 600) peaking 5 d after the last point, or with ``u0=None`` a slow trend,
    a straight brightening by 200 over the 40 nights."""
    datasets = []
    for s, site in enumerate(SITES):
        nights = np.arange(40.0)[:, None] + s / 3.0 + np.linspace(0.0, 0.2, 6)[None, :]
        hjd = 2_461_000.0 + nights.ravel()
        if u0 is None:
            signal = 200.0 * (hjd - hjd.min()) / 40.0
        else:
            tau = (hjd - (hjd.max() + 5.0)) / 15.0
            signal = 600.0 * (magnification(np.sqrt(u0 * u0 + tau * tau)) - 1.0)
        n = len(hjd)
        datasets.append(
            Dataset(
                site=site, field=4, hjd=hjd, flux=signal + 20.0 * rng.standard_normal(n),
                flux_err=np.full(n, 20.0), sky=np.full(n, 1000.0, np.float32),
                fwhm=np.full(n, 4.0, np.float32), airmass=np.full(n, 1.2, np.float32),
                psf_quality=np.full(n, 90.0, np.float32), band=np.zeros(n, dtype=np.uint8),
            )
        )  # fmt: skip
    return Star(star_id, str(star_id), np.nan, np.nan, -1, np.nan, np.nan, tuple(datasets))


class _Scorer(Scorer):
    """The real stage with the real model, an alert reduced to its star (no AlertFinder
    summary needed)."""

    def alert(self, store, rising, position, candidate, result):  # type: ignore[no-untyped-def]
        return position


@pytest.mark.parametrize("minimum", [0.0, MIN_PEAK_MAGNIFICATION])
def test_the_magnification_gate_holds_back_shallow_rises(minimum: float) -> None:
    """At threshold 0 every candidate is a LensNet yes; the gate then alerts the u0 = 0.1
    event (fitted A 7) and holds back the slow trend (fitted A 1.6), which stays open to a
    later call."""
    rng = np.random.default_rng(8)
    stars = [_rising_star(1, rng, u0=0.1), _rising_star(2, rng, u0=None)]
    store = StarStore(StoreConfig(capacity_per_site=300))
    for star in stars:
        for site, observations in to_observations(star).items():
            store.append(site, observations)
    settings = ModelSettings(
        alert_threshold=0.0,
        min_peak_magnification=minimum,
        opinions=OpinionSettings(enabled=False),
        binary=BinarySettings(enabled=False),
    )
    scorer = _Scorer(settings)
    pending = [
        Pending(0, star.star_id, prepare(star, rule=HIGH_CADENCE), None, i, -1)  # type: ignore[arg-type]
        for i, star in enumerate(stars)
    ]
    result = scorer.decide({0: store}, pending)
    assert result.scored == 2
    alerted = [position for _, position in result.alerts]
    if minimum == 0:
        assert alerted == [0, 1]
        assert result.below_magnification == 0
    else:
        assert alerted == [0]
        assert result.below_magnification == 1
        assert np.isnan(store.stars.alerted_hjd[store.stars.row(2)])
