"""The scoring stage's candidates, read from the store in one pass, against the star-by-star
path they replace: each star's buffers as an archive ``Star``, then ``prepare``."""

from __future__ import annotations

import numpy as np
import pytest

from consumer.alertfinder.api import HIGH_CADENCE
from consumer.constants import SITES
from consumer.pipeline.scoring import dataset_table
from consumer.seasons.archive import Dataset, Star, to_observations
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
