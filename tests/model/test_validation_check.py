"""The validation check's printout: every figure of every artifact, in its order."""

from __future__ import annotations

from typing import Any

from model.evaluation.validation_check import FIGURES, report


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
