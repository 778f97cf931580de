"""The validation check's printout: every figure of every artifact, in its order."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from model.evaluation.cadence import StarCalls
from model.evaluation.validation_check import FIGURES, PRIOR_MAGNIFICATION, at_prior, report


def entry(scale: float) -> dict[str, Any]:
    per_threshold = {
        "event_recall_before_peak_t0_ge_20": 0.5 * scale,
        "event_recall_before_peak_early": 0.25 * scale,
        "triggered_before_peak_recall": 0.9,
        "alerted_per_class": {"YES": 0.5, "MAYBE": 0.7, "NO": 0.01 * scale},
        "alerted_per_subclass": {"pspl": 0.5, "mira": 0.02 * scale, "slow_trend": 0.3},
    }
    return {"0.45": per_threshold, "0.955": per_threshold, "events_stay_events": 0.8}


def test_one_block_per_artifact_with_every_figure() -> None:
    metrics = {
        "n_stars": 10,
        "n_calls": 40,
        "trigger_before_peak_t0_ge_20": 0.75,
        "trigger_before_peak_early": float("nan"),
        "per_model": [entry(1.0), entry(3.0)],
        "non_event_subclasses": ["mira", "slow_trend"],
    }
    lines = report(metrics, ["new", "old"])
    assert lines[0] == (
        "10 stars, 40 LensNet calls, trigger before the peak 75.0 % (t0 >= 20 d), n/a (t0 10-40 d)"
    )
    block = 1 + len(FIGURES) + 2 + 1 + 1
    assert lines[1] == "new:"
    assert lines[1 + block] == "old:"
    # Only false alerts are listed, worst first, from 5 %.
    assert lines[block] == "  non-event subclasses alerted >= 5 % @ 0.45: slow_trend 30.0 %"
    assert lines[-1] == (
        "  non-event subclasses alerted >= 5 % @ 0.45: slow_trend 30.0 %, mira 6.0 %"
    )
    assert "  events t0>=20 d alerted before the peak @ 0.45: 50.0 %" in lines
    assert "  events t0>=20 d alerted before the peak @ 0.45: 150.0 %" in lines
    assert "  non-event stars alerted @ 0.955: 3.0 %, artefacts (MAYBE) 70.0 %" in lines
    assert len(lines) == 1 + 2 * block


def star(label: str, scores: list[float], magnifications: list[float]) -> StarCalls:
    n = len(scores)
    return StarCalls(
        season=1,
        star_index=0,
        star_id=0,
        label=label,
        subclass="pspl" if label == "YES" else "slow_trend",
        t_peak=float("nan"),
        t_rise_start=float("nan"),
        baseline_mag=18.0,
        first_data=0.0,
        last_data=1.0,
        calls=np.arange(n, dtype=np.float64),
        p_event=np.array([scores]),
        site_scores=np.zeros((1, n, 3)),
        n_sites=1,
        peak_magnification=np.array(magnifications),
    )


def test_at_prior_reads_the_first_call_the_gate_lets_alert() -> None:
    prior = PRIOR_MAGNIFICATION
    stars = [
        # Alerts at its second call (the first fails the gate), there at the prior.
        star("YES", [0.9, 0.9, 0.9], [1.5, prior + 0.05, 8.0]),
        # Alerts at its first call, above the prior; a later call at the prior does not count.
        star("YES", [0.9, 0.9], [6.0, prior]),
        # Never alerts (low scores): not counted.
        star("YES", [0.1, 0.2], [prior, prior]),
        star("NO", [0.5], [prior - 0.05]),
        star("MAYBE", [0.9], [prior]),  # neither label
    ]
    assert prior == pytest.approx(3.4448, abs=1e-4)  # A(u0 = 0.3)
    assert at_prior(stars, 0, 0.45, 2.0) == {"YES": 0.5, "NO": 1.0}
    # Without a gate the first star alerts at its first call, away from the prior.
    assert at_prior(stars, 0, 0.45, 0.0) == {"YES": 0.0, "NO": 1.0}
    assert math.isnan(at_prior(stars[3:], 0, 0.45, 2.0)["YES"])


def test_the_prior_line_closes_a_block_when_measured() -> None:
    measured = {**entry(1.0), "at_prior": {"YES": 0.25, "NO": float("nan")}}
    metrics = {
        "n_stars": 10,
        "n_calls": 40,
        "trigger_before_peak_t0_ge_20": 0.75,
        "trigger_before_peak_early": 0.5,
        "per_model": [measured],
    }
    lines = report(metrics, ["new"])
    assert lines[-1] == (
        "  first alerting call @ 0.45 with the fit at the prior (A 3.44 +- 0.1): "
        "events 25.0 %, non-events n/a"
    )
