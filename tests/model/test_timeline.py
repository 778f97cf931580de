"""The daemon's schedule replayed offline: the same trigger, the same rescore rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from consumer.alertfinder.api import HIGH_CADENCE, LOW_CADENCE, evaluate
from consumer.seasons.archive import Dataset, Star
from consumer.settings import ModelSettings, TriggerSettings
from model.features import valid_mask
from model.simulate import SimulationConfig, simulate_star
from model.timeline import DEFAULT_CADENCE, Cadence, timelines

EXACT = Cadence(refresh_fraction=0.0, capacity=10**7)


def brute_force(star: Star, window_end: npt.NDArray[np.float64], cadence: Cadence) -> list[float]:
    """The schedule by hand: the single-star trigger at every window, then the rescore rule."""
    rule = cadence.rule_for([d.field for d in star.datasets])
    scored: list[float] = []
    for end in window_end.tolist():
        columns = []
        for d in star.datasets:
            keep = valid_mask(d) & (d.band == 0) & (d.hjd < end)
            if keep.any():
                columns.append((d.hjd[keep], d.flux[keep], d.flux_err[keep]))
        t_last = max(float(c[0][-1]) for c in columns)
        if scored and t_last < scored[-1] + cadence.rescore_days:
            continue
        if evaluate(columns, **dataclasses.asdict(rule)).triggered:
            scored.append(t_last)
    return scored


def test_schedule_matches_the_single_star_trigger_at_every_window() -> None:
    config = SimulationConfig(n_stars=40, seed=5)
    stars = [simulate_star(config, i)[0] for i in range(40)]
    lines = timelines(stars, EXACT)
    assert sum(len(line.scored) for line in lines) > 20  # the sample triggers
    for star, line in zip(stars, lines, strict=True):
        assert line.star_id == star.star_id
        np.testing.assert_array_equal(line.scored, brute_force(star, line.window_end, EXACT))
        assert (np.diff(line.scored) >= EXACT.rescore_days).all()


def test_windows_close_on_hjd_multiples_and_calls_are_observations() -> None:
    config = SimulationConfig(n_stars=10, seed=6)
    star = simulate_star(config, 2)[0]
    line = timelines([star])[0]
    ends = line.window_end / DEFAULT_CADENCE.evaluation_days
    np.testing.assert_allclose(ends, np.round(ends))
    assert (line.t_last < line.window_end).all()
    hjd = np.concatenate([d.hjd for d in star.datasets])
    assert np.isin(line.scored, hjd).all()


def test_rule_follows_the_fields_as_in_the_daemon() -> None:
    assert DEFAULT_CADENCE.rule_for([2, 17]) == HIGH_CADENCE
    assert DEFAULT_CADENCE.rule_for([17]) == LOW_CADENCE
    settings = TriggerSettings()
    assert DEFAULT_CADENCE.high_cadence_fields == settings.high_cadence_fields
    assert DEFAULT_CADENCE.evaluation_days == settings.evaluation_days
    assert DEFAULT_CADENCE.refresh_fraction == settings.baseline_refresh_fraction
    assert DEFAULT_CADENCE.rescore_days == ModelSettings().rescore_days
    assert DEFAULT_CADENCE.high_cadence.k == settings.high_cadence.k
    assert DEFAULT_CADENCE.low_cadence.dchi2_min == settings.low_cadence.dchi2_min


def test_a_star_without_i_band_data_has_an_empty_timeline() -> None:
    empty = Dataset(
        site="CTIO",
        field=2,
        hjd=np.array([2_461_100.0]),
        flux=np.array([1.0]),
        flux_err=np.array([1.0]),
        sky=np.ones(1, np.float32),
        fwhm=np.ones(1, np.float32),
        airmass=np.ones(1, np.float32),
        psf_quality=np.ones(1, np.float32),
        band=np.ones(1, np.uint8),
    )
    star = Star(star_id=1, name="1", ra=0.0, dec=0.0, chip=0, x=0.0, y=0.0, datasets=(empty,))
    line = timelines([star])[0]
    assert len(line.window_end) == 0
    assert np.isnan(line.first_trigger)
