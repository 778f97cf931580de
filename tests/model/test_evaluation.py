"""The evaluation's definitions on hand-made outcomes, and a tiny end-to-end daemon-cadence run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.dataset import SeasonSet
from model.evaluation.cadence import (
    Probes,
    StarCalls,
    cadence_metrics,
    load_calls,
    run_seasons,
    save_calls,
)
from model.lensnet import LensNet, LensNetConfig


def star(
    label: str,
    subclass: str,
    t_peak: float,
    calls: list[float],
    scores: list[float],
    peak_snr: float = np.nan,
    magnification: list[float] | None = None,
) -> StarCalls:
    n = len(calls)
    return StarCalls(
        season=1, star_index=0, star_id=0, label=label, subclass=subclass, t_peak=t_peak,
        t_rise_start=t_peak - 10.0, baseline_mag=18.0, first_data=0.0, last_data=240.0,
        calls=np.asarray(calls, dtype=np.float64), p_event=np.asarray([scores], dtype=np.float64),
        site_scores=np.zeros((1, n, 3)), n_sites=3, peak_snr=peak_snr,
        peak_magnification=None if magnification is None else np.asarray(magnification),
    )  # fmt: skip


def test_alert_times_and_rates_follow_their_definitions() -> None:
    stars = [
        star("YES", "pspl", 100.0, [88.0, 89.0, 95.0], [0.5, 0.97, 0.99]),  # 12 d early @ .45
        star("YES", "pspl", 100.0, [99.0, 101.0], [0.3, 0.99]),  # alerted after the peak
        star("YES", "pspl", 100.0, [], []),  # never triggered
        star("NO", "mira", 50.0, [10.0, 11.0], [0.1, 0.96]),  # one false alert at both
        star("NO", "mira", 50.0, [10.0], [0.2]),
        star("NO", "constant", np.nan, [], []),
    ]
    probes = Probes(
        site_scores=np.array([[[0.01, 0.5, 0.0]]]), has_data=np.array([[True, True, False]])
    )
    metrics = cadence_metrics(stars, probes, (0.45, 0.955))
    model = metrics["per_model"][0]
    assert model["0.45"]["alerted_per_class"]["YES"] == pytest.approx(2 / 3)
    assert model["0.45"]["event_recall_before_peak_t0_ge_20"] == pytest.approx(1 / 3)
    assert model["0.45"]["event_recall_by_lead"]["10"] == pytest.approx(1 / 3)
    assert model["0.955"]["event_recall_by_lead"]["10"] == pytest.approx(1 / 3)  # 89 <= 90
    assert model["0.955"]["event_recall_by_lead"]["5"] == pytest.approx(1 / 3)
    assert model["0.45"]["triggered_before_peak_recall"] == pytest.approx(1 / 2)
    assert metrics["trigger_before_peak_t0_ge_20"] == pytest.approx(2 / 3)
    assert model["0.955"]["alerted_per_subclass"]["mira"] == pytest.approx(1 / 2)
    assert model["0.45"]["alerted_per_class"]["NO"] == pytest.approx(1 / 3)
    assert model["0.45"]["lead_days"] == [12.0]
    assert model["events_stay_events"] == pytest.approx(1 / 2)  # the second dips to 0.3
    assert model["constant_site_scores_le_0.1"] == pytest.approx(1 / 2)
    confirmed = cadence_metrics(stars, probes, (0.45,), confirm=2)["per_model"][0]["0.45"]
    assert confirmed["lead_days"] == [11.0]  # the second call of the run
    assert confirmed["alerted_per_class"]["NO"] == 0.0


def test_the_magnification_gate_defers_an_alert_to_the_first_call_that_passes_it() -> None:
    stars = [
        # LensNet says yes from the first call; the fit reaches A 2 at the third.
        star("YES", "pspl", 100.0, [80.0, 85.0, 90.0], [0.99] * 3, magnification=[1.2, 1.9, 4.0]),
        star("NO", "slow_trend", 200.0, [10.0, 11.0], [0.99, 0.99], magnification=[1.3, 1.5]),
        star("NO", "mira", 50.0, [10.0], [0.99], magnification=[np.nan]),  # no fit: no veto
        star("NO", "mira", 50.0, [10.0], [0.99]),  # saved before the gate: none
    ]  # fmt: skip
    probes = Probes(np.zeros((1, 0, 3)), np.zeros((0, 3), dtype=bool))
    gated = cadence_metrics(stars, probes, (0.45,), min_magnification=2.0)["per_model"][0]
    assert gated["0.45"]["lead_days"] == [10.0]
    assert gated["0.45"]["alerted_per_subclass"]["slow_trend"] == 0.0
    assert gated["0.45"]["alerted_per_subclass"]["mira"] == 1.0
    off = cadence_metrics(stars, probes, (0.45,), min_magnification=0.0)["per_model"][0]
    assert off["0.45"]["lead_days"] == [20.0]
    assert off["0.45"]["alerted_per_subclass"]["slow_trend"] == 1.0
    assert stars[0].alert_time(0, 0.45, min_magnification=1.5) == 85.0


def test_events_are_split_by_their_peak_snr() -> None:
    stars = [
        star("YES", "pspl", 100.0, [95.0], [0.99], peak_snr=9.0),  # alerted before the peak
        star("YES", "pspl", 100.0, [101.0], [0.99], peak_snr=8.5),  # triggered after it
        star("YES", "pspl", 100.0, [90.0], [0.3], peak_snr=60.0),  # triggered, not alerted
    ]
    probes = Probes(np.zeros((1, 0, 3)), np.zeros((0, 3), dtype=bool))
    metrics = cadence_metrics(stars, probes, (0.45,))
    assert metrics["n_events_by_snr"] == {"0-10": 2, "10-20": 0, "20-50": 0, "50-inf": 1}
    assert metrics["trigger_before_peak_by_snr"]["0-10"] == pytest.approx(1 / 2)
    assert metrics["trigger_before_peak_by_snr"]["50-inf"] == 1.0
    by_snr = metrics["per_model"][0]["0.45"]["event_recall_before_peak_by_snr"]
    assert by_snr["0-10"] == pytest.approx(1 / 2)
    assert by_snr["50-inf"] == 0.0


def test_scored_calls_round_trip(tmp_path: Path) -> None:
    stars = [
        star("YES", "pspl", 100.0, [88.0, 95.0], [0.5, 0.99], 12.5, [1.5, np.nan]),
        star("NO", "mira", 5.0, [], []),
    ]
    probes = Probes(np.zeros((1, 2, 3)), np.ones((2, 3), dtype=bool))
    save_calls(stars, probes, tmp_path / "calls.npz")
    again, again_probes = load_calls(tmp_path / "calls.npz")
    assert [s.subclass for s in again] == ["pspl", "mira"]
    assert again[0].peak_snr == 12.5
    np.testing.assert_array_equal(again[0].calls, stars[0].calls)
    np.testing.assert_array_equal(again[0].p_event, stars[0].p_event)
    np.testing.assert_array_equal(again[0].peak_magnification, [1.5, np.nan])
    np.testing.assert_array_equal(again_probes.has_data, probes.has_data)


def test_a_small_season_runs_through_the_daemon_schedule() -> None:
    torch.manual_seed(0)
    model = LensNet(LensNetConfig(hidden=4, dense=8)).eval()
    stars, probes = run_seasons([model, model], SeasonSet("tiny", (61,), 12))
    assert len(stars) == 12
    assert any(len(s.calls) for s in stars)
    for s in stars:
        assert s.p_event.shape == (2, len(s.calls))
        np.testing.assert_array_equal(s.p_event[0], s.p_event[1])  # same model, same scores
        assert (np.diff(s.calls) >= 1.0).all()
        assert s.peak_magnification is not None
        assert s.peak_magnification.shape == s.calls.shape
    assert probes.site_scores.shape[0] == 2
