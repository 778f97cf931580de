"""LensNet preprocessing: cleaning rules, site choice, outliers, padding and collation."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.seasons.archive import Dataset, Star
from model.features import (
    FEATURES,
    MIN_POINTS,
    InsufficientDataError,
    collate,
    outlier_mask,
    prepare,
    select_sites,
    valid_mask,
)

F64 = npt.NDArray[np.float64]
T0 = 2_461_100.0


def dataset(
    site: str = "CTIO",
    n: int = 50,
    *,
    field: int = 2,
    t0: float = T0,
    flux: F64 | None = None,
    band: int = 0,
    psf: bool = True,
) -> Dataset:
    hjd = np.asarray(t0 + np.arange(n) * 0.1, dtype=np.float64)
    rng = np.random.default_rng(n + field)
    return Dataset(
        site=site,
        field=field,
        hjd=hjd,
        flux=rng.normal(0.0, 1.0, n) if flux is None else flux,
        flux_err=np.ones(n),
        sky=np.full(n, 1000.0, dtype=np.float32),
        fwhm=np.full(n, 2.5, dtype=np.float32),
        airmass=np.full(n, 1.2, dtype=np.float32),
        psf_quality=np.full(n, 50.0 if psf else np.nan, dtype=np.float32),
        band=np.full(n, band, dtype=np.uint8),
    )


def star(*datasets: Dataset) -> Star:
    return Star(1, "1", np.nan, np.nan, -1, np.nan, np.nan, tuple(datasets))


def with_column(d: Dataset, name: str, index: int, value: float) -> Dataset:
    column = np.array(getattr(d, name), copy=True)
    column[index] = value
    return Dataset(**{**d.__dict__, name: column})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("flux_err", -1.0),
        ("flux_err", 0.0),
        ("psf_quality", -0.5),
        ("psf_quality", 100.5),
        ("fwhm", -0.1),
        ("sky", np.nan),
        ("flux", np.nan),
        ("hjd", np.nan),
    ],
)
def test_each_cleaning_rule_drops_the_point(name: str, value: float) -> None:
    mask = valid_mask(with_column(dataset(), name, 7, value))
    assert not mask[7]
    assert mask.sum() == 49


def test_boundary_values_are_valid() -> None:
    d = with_column(with_column(dataset(), "psf_quality", 3, 0.0), "psf_quality", 4, 100.0)
    assert valid_mask(with_column(d, "fwhm", 5, 0.0)).all()


def test_a_missing_column_keeps_points_and_stays_nan() -> None:
    d = dataset(psf=False)  # a .pysis file: no PSF quality at all
    assert valid_mask(d).all()
    candidate = prepare(star(d))
    psf = candidate.x[0, :, FEATURES.index("psf_quality")]
    assert np.isnan(psf).all()


def test_v_band_and_points_after_as_of_are_dropped() -> None:
    s = star(dataset(n=40), dataset(n=30, band=1, field=3))
    (ctio, saao, sso) = select_sites(s, as_of=T0 + 1.95)
    assert ctio is not None
    assert len(ctio) == 20  # t0 + 0.0 ... t0 + 1.9
    assert ctio.field == 2
    assert saao is None
    assert sso is None


def test_site_dataset_with_most_points_wins_ties_to_lower_field() -> None:
    chosen = select_sites(star(dataset(n=30, field=5), dataset(n=40, field=6)))[0]
    assert chosen is not None
    assert chosen.field == 6
    tie = select_sites(star(dataset(n=30, field=5), dataset(n=30, field=4)))[0]
    assert tie is not None
    assert tie.field == 4


def test_only_the_most_recent_points_are_kept() -> None:
    series = select_sites(star(dataset(n=100)), max_length=60)[0]
    assert series is not None
    assert len(series) == 60
    assert series.hjd[0] == pytest.approx(T0 + 4.0)


def test_isolated_spike_is_an_outlier_but_a_short_anomaly_is_not() -> None:
    flux = np.random.default_rng(1).normal(0.0, 1.0, 200)
    flux[50] += 40.0  # one-point spike
    flux[100:104] += 40.0  # a four-point planetary-like bump
    flux[-1] += 40.0  # the latest point: the alert itself, never removed
    mask = outlier_mask(flux)
    assert mask[50]
    assert not mask[100:104].any()
    assert not mask[-1]
    assert mask.sum() == 1


def _outlier_reference(
    flux: F64, half_window: int = 5, n_mad: float = 6.0
) -> npt.NDArray[np.bool_]:
    """The rule in plain numpy: running median of the neighbours, scaled MAD, isolation."""
    n = len(flux)
    if n < 2 * half_window + 1:
        return np.zeros(n, dtype=bool)
    padded = np.concatenate([np.full(half_window, np.nan), flux, np.full(half_window, np.nan)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half_window + 1).copy()
    windows[:, half_window] = np.nan  # neighbours only
    residual = flux - np.nanmedian(windows, axis=1)
    scale = 1.4826 * np.median(np.abs(residual - np.median(residual)))
    if not scale > 0:
        return np.zeros(n, dtype=bool)
    z = residual / scale
    prev_same = np.zeros(n, dtype=bool)
    next_same = np.zeros(n, dtype=bool)
    prev_same[1:] = (np.sign(z[:-1]) == np.sign(z[1:])) & (np.abs(z[:-1]) > n_mad / 2)
    next_same[:-1] = (np.sign(z[1:]) == np.sign(z[:-1])) & (np.abs(z[1:]) > n_mad / 2)
    out = (np.abs(z) > n_mad) & ~prev_same & ~next_same
    out[0] = out[-1] = False
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32),
        min_size=0,
        max_size=60,
    )
)
def test_compiled_outlier_mask_matches_the_numpy_rule(values: list[float]) -> None:
    flux = np.asarray(values, dtype=np.float64)
    np.testing.assert_array_equal(outlier_mask(flux), _outlier_reference(flux))


def test_fewer_than_min_points_in_every_site_is_an_error() -> None:
    with pytest.raises(InsufficientDataError, match="CTIO 9"):
        prepare(star(dataset(n=MIN_POINTS - 1), dataset("SSO", n=3)))
    prepare(star(dataset(n=MIN_POINTS), dataset("SSO", n=3)))


def test_candidate_is_padded_after_its_steps_with_time_relative_to_the_last_point() -> None:
    candidate = prepare(star(dataset(n=30), dataset("SSO", n=12, t0=T0 + 5.0)))
    assert candidate.x.shape == (3, 30, len(FEATURES))
    assert candidate.lengths.tolist() == [30, 0, 12]
    time = candidate.x[..., 0]
    assert time[2, 11] == 0.0  # SSO ends last
    assert (time <= 0).all()
    assert candidate.x[2, :12, 1:3].all()  # real steps first
    assert not candidate.x[2, 12:].any()  # then zeros
    assert not candidate.x[1].any()  # the empty site
    assert candidate.trigger.datasets != () or not candidate.trigger.triggered


def test_fitted_line_feature_follows_a_rise() -> None:
    flux = np.zeros(120)
    flux[100:] = np.arange(20) * 5.0
    candidate = prepare(star(dataset(n=120, flux=flux + 0.01 * np.sin(np.arange(120)))))
    assert candidate.trigger.triggered
    fitted = candidate.x[0, :, FEATURES.index("fitted")]
    assert fitted[-1] > 3.0  # arcsinh of ~95 sigma
    assert abs(fitted[0]) < 0.5


def test_collate_pads_after_the_steps_to_the_longest() -> None:
    a = prepare(star(dataset(n=20)))
    b = prepare(star(dataset(n=35), dataset("SAAO", n=15)))
    x, lengths = collate([a, b])
    assert x.shape == (2, 3, 35, len(FEATURES))
    assert lengths.tolist() == [[20, 0, 0], [35, 15, 0]]
    np.testing.assert_array_equal(x[0, 0, :20], a.x[0])
    assert not x[0, 0, 20:].any()
    capped, capped_lengths = collate([b], max_length=10)
    assert capped.shape[2] == 10
    assert capped_lengths.tolist() == [[10, 10, 0]]
    np.testing.assert_array_equal(capped[0, 0], b.x[0, 25:35])  # the most recent 10
    np.testing.assert_array_equal(capped[0, 1], b.x[1, 5:15])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=3, max_size=3))
def test_collate_keeps_every_real_step(site_lengths: list[int]) -> None:
    length = max(site_lengths)
    x = np.zeros((3, length, len(FEATURES)), dtype=np.float32)
    for s, n in enumerate(site_lengths):
        x[s, :n] = 1.0 + s
    batch, lengths = collate([(x, np.asarray(site_lengths, dtype=np.int64))])
    assert lengths.tolist() == [site_lengths]
    for s, n in enumerate(site_lengths):
        assert (batch[0, s] != 0).any(axis=1).sum() == n


def test_dropped_points_are_counted_by_reason_and_n_removed_is_cleaning_only() -> None:
    """Newcomer item 12: `n_removed` (documented: cleaning and outlier rejection) no longer
    counts the points of unused datasets or those beyond the length cap."""
    flux = np.random.default_rng(3).normal(0.0, 1.0, 80)
    flux[40] += 50.0  # one isolated spike: an outlier
    used = with_column(dataset(n=80, field=2, flux=flux), "flux_err", 10, -1.0)  # 1 cleaned
    other = dataset(n=30, field=3)  # same site, fewer points: not used
    saao = dataset("SAAO", n=25)
    candidate = prepare(star(used, other, saao), max_length=60)
    assert candidate.dropped == {
        "cleaning": 1,
        "other_datasets": 30,
        "beyond_cap": 79 - 60,
        "outliers": 1,
    }
    assert candidate.n_removed == 2
    assert int(candidate.lengths.sum()) == 80 + 30 + 25 - sum(candidate.dropped.values())
