"""The batch preprocessing against :func:`model.features.prepare`, star by star, bit for bit."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from consumer.alertfinder.api import HIGH_CADENCE, LOW_CADENCE, TriggerRule
from consumer.seasons.archive import Dataset, Star
from model.batch_features import DatasetTable, outlier_mask_sliding, prepare_batch
from model.features import (
    OUTLIER_HALF_WINDOW,
    OUTLIER_N_MAD,
    Candidate,
    InsufficientDataError,
    _outlier_mask,
    prepare,
)
from model.simulate import SimulationConfig, simulate_star
from tests.model import test_features as single


def same_candidate(got: Candidate, expected: Candidate) -> None:
    """Every field equal; arrays byte for byte (NaN included)."""
    assert got.x.dtype == expected.x.dtype
    assert got.x.shape == expected.x.shape
    assert got.x.tobytes() == expected.x.tobytes()
    assert got.lengths.tolist() == expected.lengths.tolist()
    assert got.trigger == expected.trigger or repr(got.trigger) == repr(expected.trigger)
    assert (got.fields, got.n_removed) == (expected.fields, expected.n_removed)
    assert got.dropped == expected.dropped
    assert list(got.dropped) == list(expected.dropped)
    assert np.float64(got.t_last).tobytes() == np.float64(expected.t_last).tobytes()
    assert np.float64(got.flux_scale).tobytes() == np.float64(expected.flux_scale).tobytes()
    for a, b in zip(got.series, expected.series, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert (a.site, a.field) == (b.site, b.field)
            for name in ("hjd", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality"):
                assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    for line, reference in zip(got.lines, expected.lines, strict=True):
        assert line.dtype == reference.dtype
        assert line.tobytes() == reference.tobytes()


def check(stars: list[Star], rules: list[TriggerRule], **options: float) -> None:
    got = prepare_batch(DatasetTable.from_stars(stars), rules, **options)  # type: ignore[arg-type]
    assert len(got) == len(stars)
    for star, rule, result in zip(stars, rules, got, strict=True):
        if isinstance(result, InsufficientDataError):
            with pytest.raises(InsufficientDataError) as raised:
                prepare(star, rule=rule, **options)  # type: ignore[arg-type]
            assert str(raised.value) == str(result)
            continue
        expected = prepare(star, rule=rule, **options)  # type: ignore[arg-type]
        assert isinstance(result, Candidate), result
        same_candidate(result, expected)


@pytest.fixture(scope="module")
def stars() -> list[Star]:
    config = SimulationConfig(n_stars=60, seed=5, bad_point_fraction=0.05, outlier_fraction=0.02)
    return [simulate_star(config, i)[0] for i in range(60)]


def test_simulated_stars_whole_season(stars: list[Star]) -> None:
    rules = [HIGH_CADENCE if i % 2 else LOW_CADENCE for i in range(len(stars))]
    check(stars, rules)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_simulated_stars_part_of_a_season_and_short_caps(
    stars: list[Star], fraction: float
) -> None:
    t = np.concatenate([d.hjd for s in stars for d in s.datasets])
    as_of = float(np.quantile(t, fraction))
    rules = [HIGH_CADENCE] * len(stars)
    check(stars, rules, as_of=as_of)
    check(stars, rules, as_of=as_of, start=as_of - 20.0, max_length=40)


def mangle(star: Star, rng: np.random.Generator) -> Star:
    """Missing columns, infinities, V band, bad values and a third of the points dropped."""
    datasets = []
    for d in star.datasets:
        columns = {f.name: getattr(d, f.name) for f in dataclasses.fields(d)}
        n = len(d)
        keep = rng.uniform(size=n) > 0.3
        for name in ("sky", "fwhm", "airmass", "psf_quality"):
            roll = rng.uniform()
            values = np.array(columns[name], copy=True)
            if roll < 0.15:
                values[:] = np.nan  # missing
            elif roll < 0.2:
                values[:] = np.inf  # missing, and not finite
            elif roll < 0.4:
                values[rng.uniform(size=n) < 0.05] = np.nan
            columns[name] = values
        columns["psf_quality"][rng.uniform(size=n) < 0.02] = 150.0
        columns["fwhm"][rng.uniform(size=n) < 0.02] = -1.0
        columns["flux_err"] = np.where(rng.uniform(size=n) < 0.02, 0.0, columns["flux_err"])
        columns["band"] = np.where(rng.uniform(size=n) < 0.1, 1, columns["band"]).astype(np.uint8)
        for name in ("hjd", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality", "band"):
            columns[name] = np.asarray(columns[name])[keep]
        datasets.append(Dataset(**columns))
    return dataclasses.replace(star, datasets=tuple(datasets))


def test_odd_datasets(stars: list[Star]) -> None:
    rng = np.random.default_rng(11)
    odd = [mangle(s, rng) for s in stars]
    tiny = dataclasses.replace(
        stars[0], datasets=tuple(dataclasses.replace(d, **cut(d, 12)) for d in stars[0].datasets)
    )
    unsorted_star = dataclasses.replace(
        stars[1], datasets=tuple(dataclasses.replace(d, **flip(d)) for d in stars[1].datasets)
    )
    empty = dataclasses.replace(stars[2], datasets=())
    batch = [*odd, tiny, unsorted_star, empty]
    check(batch, [HIGH_CADENCE] * len(batch))


def cut(d: Dataset, n: int) -> dict[str, Any]:
    return {
        name: np.asarray(getattr(d, name))[:n]
        for name in ("hjd", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality", "band")
    }


def flip(d: Dataset) -> dict[str, Any]:
    return {
        name: np.asarray(getattr(d, name))[::-1].copy()
        for name in ("hjd", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality", "band")
    }


def test_sliding_outlier_mask_equals_the_reference() -> None:
    """Random fluxes with spikes, dips, runs and many ties (ties are where a running median
    could pick another neighbour): the same mask as ``model.features``' kernel."""
    rng = np.random.default_rng(17)
    for trial in range(2000):
        n = int(rng.integers(11, 400))
        if trial % 4 == 0:
            flux = rng.normal(size=n)
        elif trial % 4 == 1:
            flux = rng.integers(0, 4, n).astype(np.float64)
        elif trial % 4 == 2:
            flux = np.where(rng.uniform(size=n) < 0.05, 50.0, rng.normal(size=n))
        else:
            flux = np.round(rng.normal(size=n), 1) - 30.0 * (rng.uniform(size=n) < 0.03)
        expected = _outlier_mask(flux, OUTLIER_HALF_WINDOW, OUTLIER_N_MAD)
        got = outlier_mask_sliding(flux, OUTLIER_HALF_WINDOW, OUTLIER_N_MAD)
        assert got.tolist() == expected.tolist()


def test_dropped_points_by_reason_as_prepare_counts_them() -> None:
    """Every reason of :attr:`Candidate.dropped` non-zero: a cleaned point, a second dataset on
    the same site, points beyond the cap and an outlier."""
    flux = np.random.default_rng(3).normal(0.0, 1.0, 80)
    flux[40] += 50.0
    used = single.with_column(single.dataset(n=80, field=2, flux=flux), "flux_err", 10, -1.0)
    lonely = single.star(used, single.dataset(n=30, field=3), single.dataset("SAAO", n=25))
    check([lonely], [HIGH_CADENCE], max_length=60)
    (got,) = prepare_batch(DatasetTable.from_stars([lonely]), [HIGH_CADENCE], max_length=60)
    assert isinstance(got, Candidate)
    assert all(got.dropped.values()), got.dropped
