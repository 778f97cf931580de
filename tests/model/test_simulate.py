"""The season simulator: determinism, observing realism, class signatures and the archive."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from consumer.constants import SITES
from consumer.exceptions import ConfigError
from consumer.seasons.archive import ArchiveError, Dataset, Star, read_season
from model.simulate import (
    Label,
    SimulationConfig,
    read_labels,
    simulate_season,
    simulate_star,
    write_season,
)
from model.simulation.lens import binary_magnification, pspl_magnification, source_position
from model.simulation.schedule import frame_series
from model.simulation.sites import FIELD_BY_NUMBER, SITE_INFO, moon_radec, sun_radec
from model.simulation.sites import angular_distance_deg as distance
from model.simulation.variables import _pulsation

F64 = npt.NDArray[np.float64]
Sample = list[tuple[Star, Label]]
CONFIG = SimulationConfig(n_stars=300, seed=7)


@pytest.fixture(scope="module")
def sample() -> Sample:
    return list(simulate_season(CONFIG))


def of(sample: Sample, subclass: str) -> Sample:
    chosen = [(star, label) for star, label in sample if label.subclass == subclass]
    assert chosen, f"no {subclass} star in the sample"
    return chosen


def clean(dataset: Dataset) -> npt.NDArray[np.bool_]:
    """I-band points kept by LensNet's cleaning (flux_err >= 0, psf 0-100, fwhm >= 0, no NaN)."""
    return (
        (dataset.band == 0)
        & np.isfinite(dataset.flux)
        & np.isfinite(dataset.sky)
        & (dataset.flux_err >= 0)
        & (dataset.fwhm >= 0)
        & (dataset.psf_quality >= 0)
        & (dataset.psf_quality <= 100)
    )


def spearman(x: npt.NDArray[np.floating[Any]], y: npt.NDArray[np.floating[Any]]) -> float:
    rank_x = np.argsort(np.argsort(x)).astype(float)
    rank_y = np.argsort(np.argsort(y)).astype(float)
    return float(np.corrcoef(rank_x, rank_y)[0, 1])


def points(star: Star) -> Iterator[tuple[Dataset, npt.NDArray[np.bool_]]]:
    for dataset in star.datasets:
        yield dataset, clean(dataset)


# ---------------------------------------------------------------------------------- basics


def test_same_seed_gives_identical_stars_and_another_seed_differs() -> None:
    first_star, first_label = simulate_star(CONFIG, 11)
    again_star, again_label = simulate_star(SimulationConfig(n_stars=5, seed=CONFIG.seed), 11)
    other_star, _ = simulate_star(SimulationConfig(n_stars=300, seed=CONFIG.seed + 1), 11)
    assert first_star.star_id == again_star.star_id
    assert first_label == again_label
    for a, b in zip(first_star.datasets, again_star.datasets, strict=True):
        for name in ("hjd", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality", "band"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(
        np.concatenate([d.flux for d in first_star.datasets]),
        np.concatenate([d.flux for d in other_star.datasets]),
    )


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="class_fractions"):
        SimulationConfig(class_fractions=(0.5, -0.1, 0.6))
    with pytest.raises(ConfigError, match="n_stars"):
        SimulationConfig(n_stars=10**7)


def test_class_mix_follows_the_configured_fractions(sample: Sample) -> None:
    labels = [label.label for _, label in sample]
    for name, expected in zip(("YES", "MAYBE", "NO"), CONFIG.class_fractions, strict=True):
        assert abs(labels.count(name) / len(labels) - expected) < 0.08, name
    assert {label.subclass for _, label in sample} >= {"pspl", "bleed_trail", "noise_run"}


def test_star_ids_are_unique_and_encode_field_chip_and_index(sample: Sample) -> None:
    ids = [star.star_id for star, _ in sample]
    assert len(set(ids)) == len(ids)
    for index, (star, label) in enumerate(sample):
        assert label.star_id == star.star_id
        assert star.name == str(star.star_id)
        field, chip = star.star_id // 10**8, (star.star_id // 10**7) % 10
        assert star.star_id % 10**7 == index
        assert chip == star.chip
        assert field == star.datasets[0].field
        centre = FIELD_BY_NUMBER[field]
        assert (
            float(
                distance(np.array([star.ra]), np.array([star.dec]), centre.ra_deg, centre.dec_deg)[
                    0
                ]
            )
            < 1.5
        )
        assert 0 <= star.x < 9216
        assert 0 <= star.y < 9216


def test_observation_counts_are_moderate(sample: Sample) -> None:
    per_site = [len(d) for star, _ in sample for d in star.datasets]
    assert 300 < np.mean(per_site) < 2000
    assert any(len(star.datasets) == 6 for star, _ in sample)  # overlapping fields


# ------------------------------------------------------------------------ observing realism


def test_each_site_observes_in_its_own_night(sample: Sample) -> None:
    for star, _ in sample[:60]:
        for dataset in star.datasets:
            longitude = SITE_INFO[dataset.site].longitude_deg
            # Local mean solar time, hours after midnight; independent of the ephemerides.
            hours = ((dataset.hjd - 0.5 + longitude / 360.0) % 1.0) * 24.0
            assert np.all((hours > 17.5) | (hours < 6.8)), dataset.site


def test_season_window_and_shorter_nights_at_its_edges() -> None:
    for site in SITES:
        frames = frame_series(CONFIG, site, 2)
        assert frames.hjd.min() >= CONFIG.season_start_hjd
        assert frames.hjd.max() < CONFIG.season_end_hjd
        day = frames.hjd - CONFIG.season_start_hjd

        def per_night(
            start: float, frames_day: F64 = day, night: npt.NDArray[np.int64] = frames.night
        ) -> float:
            # Frames per night with any data: the visibility window, mostly free of weather.
            chosen = (frames_day >= start) & (frames_day < start + 20)
            return float(chosen.sum() / max(len(np.unique(night[chosen])), 1))

        first, middle, last = per_night(0), per_night(110), per_night(220)
        assert first < 0.4 * middle, site
        assert last < 0.75 * middle, site


def test_v_frames_take_about_one_slot_in_v_every(sample: Sample) -> None:
    for site_index, site in enumerate(SITES):
        frames = frame_series(CONFIG, site, 2)
        assert abs(frames.band.mean() - 1 / CONFIG.v_every[site_index]) < 0.01
    star = next(star for star, _ in sample if star.datasets[0].field in (1, 2, 3, 41, 42, 43))
    dataset = star.datasets[0]
    assert 0.05 < dataset.band.mean() < 0.15


def test_conditions_differ_by_site_and_follow_airmass_and_moon() -> None:
    medians = [float(np.median(frame_series(CONFIG, site, 2).fwhm)) for site in SITES]
    assert medians[0] < medians[1] < medians[2]  # CTIO best, SSO worst
    frames = frame_series(CONFIG, "SAAO", 2)
    assert spearman(frames.airmass, frames.fwhm) > 0.1
    sun_ra, sun_dec = sun_radec(frames.hjd)
    moon_ra, moon_dec = moon_radec(frames.hjd)
    illuminated = 0.5 * (1 - np.cos(np.radians(distance(moon_ra, moon_dec, sun_ra, sun_dec))))
    assert spearman(illuminated, frames.sky) > 0.3
    assert frames.airmass.min() >= 1.0
    assert frames.airmass.max() < CONFIG.airmass_limit


def test_flux_errors_grow_with_seeing_and_sky(sample: Sample) -> None:
    star, _ = of(sample, "noise_run")[0]
    dataset = star.datasets[0]
    keep = clean(dataset)
    assert spearman(dataset.fwhm[keep], dataset.flux_err[keep]) > 0.3
    assert spearman(dataset.sky[keep], dataset.flux_err[keep]) > 0.3


def test_bad_points_exist_for_cleaning_to_remove(sample: Sample) -> None:
    datasets = [d for star, _ in sample for d in star.datasets]
    counts = {
        "negative flux_err": sum(int(np.sum(d.flux_err < 0)) for d in datasets),
        "psf out of range": sum(
            int(np.sum((d.psf_quality < 0) | (d.psf_quality > 100))) for d in datasets
        ),
        "negative fwhm": sum(int(np.sum(d.fwhm < 0)) for d in datasets),
        "nan": sum(int(np.sum(np.isnan(d.flux) | np.isnan(d.sky))) for d in datasets),
    }
    assert all(count > 0 for count in counts.values()), counts
    total = sum(len(d) for d in datasets)
    assert 0.5 * CONFIG.bad_point_fraction < sum(counts.values()) / total
    assert sum(counts.values()) / total < 1.5 * CONFIG.bad_point_fraction


# -------------------------------------------------------------------------------- classes


def test_yes_events_follow_their_point_lens_model(sample: Sample) -> None:
    for star, label in of(sample, "pspl"):
        p = label.params
        residuals = []
        for dataset, keep in points(star):
            tau = (dataset.hjd[keep] - p["t0"]) / p["tE"]
            model = p[f"offset_{dataset.site}"] + p["fs"] * (
                pspl_magnification(np.sqrt(p["u0"] ** 2 + tau**2)) - 1
            )
            z = (dataset.flux[keep] - model) / dataset.flux_err[keep]
            residuals.append(z / p[f"error_scale_{dataset.site}"])
        z = np.concatenate(residuals)
        # Unit normal residuals; the median of n of them scatters by 1.25 / sqrt(n).
        assert abs(np.median(z)) < 5.0 / math.sqrt(len(z)), label
        assert abs(1.4826 * np.median(np.abs(z - np.median(z))) - 1) < 0.1 + 5 / math.sqrt(len(z))


def test_yes_events_rise_well_above_baseline(sample: Sample) -> None:
    rising = 0
    events = of(sample, "pspl")
    for star, label in events:
        p = label.params
        flux = np.concatenate([d.flux[k] for d, k in points(star)])
        hjd = np.concatenate([d.hjd[k] for d, k in points(star)])
        near = np.abs(hjd - p["t0"]) < 0.3 * p["tE"]
        if near.sum() < 3 or not hjd.min() < p["t0"] < hjd.max():
            continue  # peaks outside the observed season have no rise to measure
        peak = float(np.median(np.sort(flux[near])[-3:]))
        assert label.t_rise_start < label.t_peak
        assert abs(label.t_peak - p["t0"]) < 0.3 * p["tE"] + 1.0
        if peak - np.median(flux) > 5 * p["typical_sigma"]:
            rising += 1
    assert rising > 0.6 * len(events)


def test_artefact_flux_grows_with_seeing_unlike_events(sample: Sample) -> None:
    def correlation(star: Star, label: Label) -> float:
        best = -1.0
        for dataset, keep in points(star):
            window = keep & (np.abs(dataset.hjd - label.t_peak) < 15.0)
            if window.sum() >= 20:
                best = max(best, spearman(dataset.fwhm[window], dataset.flux[window]))
        return best

    artefacts = of(sample, "bleed_trail") + of(sample, "diffraction_spike")
    artefact_corr = [correlation(star, label) for star, label in artefacts]
    event_corr = [correlation(star, label) for star, label in of(sample, "pspl")]
    artefact_corr = [c for c in artefact_corr if c > -1.0]
    assert np.median(artefact_corr) > 0.35
    assert np.mean(np.array(artefact_corr) > 0.0) > 0.8
    assert np.median(artefact_corr) > np.median([c for c in event_corr if c > -1.0]) + 0.2


def test_diffraction_spikes_differ_between_sites(sample: Sample) -> None:
    for _star, label in of(sample, "diffraction_spike"):
        strengths = sorted(label.params[f"strength_{site}"] for site in SITES)
        assert strengths[-1] == 1.0
        assert strengths[1] <= 0.4


def test_variables_and_trends_do_what_they_should(sample: Sample) -> None:
    for subclass in ("mira", "cepheid", "rr_lyrae"):
        for star, label in of(sample, subclass):
            p = label.params
            hjd = np.concatenate([d.hjd[k] for d, k in points(star)])
            flux = np.concatenate([d.flux[k] for d, k in points(star)])
            brightness = _pulsation((hjd - p["t_max"]) / p["period"], p["rise"])
            assert spearman(brightness, flux) > 0.3, label
    for star, label in of(sample, "eclipsing_binary"):
        flux = np.concatenate([d.flux[k] for d, k in points(star)])
        # Dips only: the brightest points are no brighter than the noise allows.
        err = np.concatenate([d.flux_err[k] for d, k in points(star)])
        assert np.percentile((flux - np.median(flux)) / err, 99) < 6.0, label
    for star, _ in of(sample, "airmass_trend"):
        dataset, keep = max(points(star), key=lambda pair: int(pair[1].sum()))
        assert spearman(dataset.airmass[keep], dataset.flux[keep]) > 0.2
    for star, _ in of(sample, "sky_trend"):
        dataset, keep = max(points(star), key=lambda pair: int(pair[1].sum()))
        assert spearman(dataset.sky[keep], dataset.flux[keep]) > 0.2
    for star, label in of(sample, "single_site_drift"):
        drifting = SITES[int(label.params["drift_site"])]
        for dataset, keep in points(star):
            late = keep & (dataset.hjd > CONFIG.season_end_hjd - 10)
            early = keep & (dataset.hjd < label.params["t_start"])
            if late.sum() < 3 or early.sum() < 3:
                continue
            rise = np.median(dataset.flux[late]) - np.median(dataset.flux[early])
            if dataset.site == drifting:
                assert rise > 0.5 * label.params["final"]
            else:
                assert abs(rise) < 0.5 * label.params["final"]
    for star, label in of(sample, "flare") + of(sample, "dwarf_nova"):
        z = np.concatenate(
            [(d.flux[k] - np.median(d.flux[k])) / d.flux_err[k] for d, k in points(star)]
        )
        # Short flares fall between the frames of sparse fields; judge only the seen ones.
        if label.params["peak_snr"] > 15.0:
            assert np.max(z) > 5.0, label


def test_every_label_has_a_rise_window_inside_the_season(sample: Sample) -> None:
    finite = [label for _, label in sample if math.isfinite(label.t_peak)]
    assert len(finite) > 0.9 * len(sample)
    for label in finite:
        assert CONFIG.season_start_hjd <= label.t_rise_start <= label.t_peak
        assert label.t_peak < CONFIG.season_end_hjd


# -------------------------------------------------------------------------- binary lenses


def test_binary_lens_with_a_negligible_companion_is_a_point_lens() -> None:
    t = np.linspace(-3, 3, 2001)
    zeta = source_position(t, 0.0, 0.05, 1.0, 0.7)
    expected = pspl_magnification(np.abs(zeta))
    np.testing.assert_allclose(binary_magnification(zeta, 1.0, 1e-9), expected, rtol=1e-5)


def test_binary_lens_matches_inverse_ray_shooting() -> None:
    """Finite-source magnification two ways: rays shot backwards vs averaged point sources."""
    s, q, centre, radius = 1.2, 0.3, complex(0.3, 0.25), 0.05
    m1, m2 = 1 / (1 + q), q / (1 + q)
    z1, z2 = -s * m2, s * m1
    step = 0.004
    grid = np.arange(-2.5, 2.5, step)
    z = grid[:, None] + 1j * grid[None, :]
    zeta = z - m1 / (np.conj(z) - z1) - m2 / (np.conj(z) - z2)
    rays = np.count_nonzero(np.abs(zeta - centre) < radius)
    shot = rays * step**2 / (np.pi * radius**2)
    rng = np.random.default_rng(0)
    r = radius * np.sqrt(rng.uniform(size=20000))
    angle = rng.uniform(0, 2 * np.pi, 20000)
    averaged = binary_magnification(centre + r * np.exp(1j * angle), s, q).mean()
    assert abs(shot / averaged - 1) < 0.02
    assert np.all(
        binary_magnification(rng.normal(0, 1, 500) + 1j * rng.normal(0, 1, 500), s, q) >= 1.0 - 1e-9
    )


# --------------------------------------------------------------------------------- on disk


def test_a_season_too_short_to_observe_still_writes_readable_stars(tmp_path: Path) -> None:
    config = SimulationConfig(n_stars=3, seed=1, season_days=0.2)  # Feb 1: no bulge at night
    star, label = simulate_star(config, 0)
    assert len(star.datasets) >= 3
    assert all(len(d) == 0 for d in star.datasets)
    assert math.isnan(label.t_peak)
    write_season(config, tmp_path / "short", progress=False)
    _, report = read_season(tmp_path / "short")
    assert report.n_stars == 3
    assert report.n_observations == 0


def test_written_season_reads_back_through_the_archive(tmp_path: Path) -> None:
    config = SimulationConfig(n_stars=12, seed=3)
    summary = write_season(config, tmp_path / "season", progress=False)
    stars, report = read_season(tmp_path / "season")
    assert report.n_stars == 12 == summary.n_stars
    assert report.n_observations == summary.n_observations
    assert {Path(path).name for path, _ in report.skipped} == {"labels.csv", "season.json"}
    labels = read_labels(tmp_path / "season" / "labels.csv")
    for index, star in enumerate(sorted(stars, key=lambda s: s.star_id % 10**7)):
        expected, expected_label = simulate_star(config, index)
        assert (star.star_id, star.chip) == (expected.star_id, expected.chip)
        assert star.ra == expected.ra
        assert star.x == expected.x
        for read, made in zip(star.datasets, expected.datasets, strict=True):
            assert (read.site, read.field) == (made.site, made.field)
            for name in ("hjd", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality"):
                np.testing.assert_array_equal(getattr(read, name), getattr(made, name), name)
        got = labels[star.star_id]
        assert (got.label, got.subclass, got.params) == (
            expected_label.label,
            expected_label.subclass,
            expected_label.params,
        )
        np.testing.assert_equal(got.t_peak, expected_label.t_peak)
    season = json.loads((tmp_path / "season" / "season.json").read_text())
    assert season["config"]["seed"] == 3
    assert season["n_stars"] == 12
    assert sum(sum(by.values()) for by in season["counts"].values()) == 12
    with pytest.raises(ArchiveError, match="not an empty directory"):
        write_season(config, tmp_path / "season", progress=False)
