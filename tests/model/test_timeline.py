"""The daemon's schedule replayed offline: the same trigger, the same rescore rule."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from consumer.alertfinder.api import HIGH_CADENCE, LOW_CADENCE, TriggerRule, evaluate
from consumer.seasons.archive import Dataset, Star
from consumer.settings import ModelSettings, TriggerSettings
from model.export import shipped_cadence
from model.features import valid_mask
from model.simulate import SimulationConfig, simulate_star
from model.timeline import DEFAULT_CADENCE, Cadence, card_cadence, timelines

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


AVERAGED = EXACT.with_rules(TriggerRule.parse("5/5@3:150~4^2"), TriggerRule.parse("8/10@3:200~3^3"))


@pytest.mark.parametrize("cadence", [EXACT, AVERAGED], ids=["published", "averaged"])
def test_schedule_matches_the_single_star_trigger_at_every_window(cadence: Cadence) -> None:
    config = SimulationConfig(n_stars=40, seed=5)
    stars = [simulate_star(config, i)[0] for i in range(40)]
    lines = timelines(stars, cadence)
    assert sum(len(line.scored) for line in lines) > 20  # the sample triggers
    for star, line in zip(stars, lines, strict=True):
        assert line.star_id == star.star_id
        np.testing.assert_array_equal(line.scored, brute_force(star, line.window_end, cadence))
        assert (np.diff(line.scored) >= cadence.rescore_days).all()


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


def test_a_card_gives_back_the_cadence_training_recorded() -> None:
    looser = DEFAULT_CADENCE.with_rules(
        TriggerRule.parse("4/5@2.5:150"), TriggerRule.parse("6/10@2.5:200~3")
    )
    card = json.loads(json.dumps({"training": {"config": {"cadence": dataclasses.asdict(looser)}}}))
    assert card_cadence(card) == looser
    assert looser.describe() == "high cadence 4/5@2.5:150, low cadence 6/10@2.5:200~3"
    # Cards from before rules could average name no average: points alone.
    del card["training"]["config"]["cadence"]["high_cadence"]["average"]
    assert card_cadence(card) == looser
    # Cards from before training recorded it: every one of them used the defaults.
    assert card_cadence({}) == DEFAULT_CADENCE
    assert card_cadence({"training": {"config": {"seed": 1}}}) == DEFAULT_CADENCE
    assert DEFAULT_CADENCE.with_rules(None, None) == DEFAULT_CADENCE


def test_a_looser_rule_calls_every_star_no_later() -> None:
    """Loosening k, n_sigma or the dchi2 minimum only adds windows that fire: each window a
    rule fires on, a looser one fires on too (the same fits, lower bars), so its first call
    comes at the same window or earlier."""
    loose = DEFAULT_CADENCE.with_rules(
        TriggerRule.parse("3/5@2:50"), TriggerRule.parse("5/10@2:75")
    )
    stars = [simulate_star(SimulationConfig(n_stars=40, seed=7), i)[0] for i in range(40)]
    strict_lines = timelines(stars, DEFAULT_CADENCE)
    loose_lines = timelines(stars, loose)
    fired = 0
    for strict, looser in zip(strict_lines, loose_lines, strict=True):
        assert np.array_equal(strict.window_end, looser.window_end)
        assert not (strict.passed & ~looser.passed).any()
        if np.isfinite(strict.first_trigger):
            fired += 1
            assert looser.first_trigger <= strict.first_trigger
    assert fired >= 5
    assert sum(np.isfinite(line.first_trigger) for line in loose_lines) > fired


def test_the_networks_beside_lensnet_use_its_training_schedule(tmp_path: Path) -> None:
    # The shipped card predates the record: the defaults.
    assert shipped_cadence() == DEFAULT_CADENCE
    looser = DEFAULT_CADENCE.with_rules(TriggerRule.parse("4/5@2.5:150"), None)
    (tmp_path / "lensnet-x.pt").write_bytes(b"")
    card = {
        "artifact": "lensnet-x.pt",
        "training": {"config": {"cadence": dataclasses.asdict(looser)}},
    }
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    assert shipped_cadence(tmp_path) == looser
