"""The trigger scan's shares, on stars whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from consumer.alertfinder.api import TriggerInputError
from model.evaluation.trigger_scan import DEFAULT_RULES, ScanStars, parse_rules, scan_metrics
from model.timeline import DEFAULT_CADENCE

NAN = math.nan


def test_shares_count_triggers_before_the_peak_and_other_stars_triggered() -> None:
    # Five stars starting at day 0: events peaking at 30 (late), 30 (late), 15 (early), an
    # event peaking after the data end, and a Mira.
    stars = ScanStars(
        label=np.array(["YES", "YES", "YES", "YES", "NO"]),
        subclass=np.array(["pspl", "pspl", "pspl", "pspl", "mira"]),
        t_peak=np.array([30.0, 30.0, 15.0, 500.0, 80.0]),
        first=np.zeros(5),
        last=np.full(5, 200.0),
        peak_snr=np.array([5.0, 60.0, 30.0, 30.0, NAN]),
        # rule 0: the first event fires after its peak, the second before; the Mira never.
        # rule 1: both late events fire before the peak, the early one too; the Mira fires.
        first_trigger=np.array(
            [[31.0, 25.0, NAN, 100.0, NAN], [29.0, 20.0, 14.0, 100.0, 90.0]], dtype=float
        ),
        calls=np.array([[1, 2, 0, 1, 0], [2, 3, 1, 1, 4]]),
    )
    result = scan_metrics(stars, ["strict", "loose"])
    assert result["n_events_t0_ge_20"] == 2
    assert result["n_events_early"] == 3  # peaks 10-40 days in
    strict, loose = result["rules"]["strict"], result["rules"]["loose"]
    assert strict["trigger_before_peak_t0_ge_20"] == 0.5
    assert loose["trigger_before_peak_t0_ge_20"] == 1.0
    assert strict["trigger_before_peak_early"] == pytest.approx(1 / 3)
    assert loose["trigger_before_peak_early"] == 1.0
    assert strict["trigger_before_peak_by_snr"]["0-10"] == 0.0
    assert strict["trigger_before_peak_by_snr"]["50-inf"] == 1.0
    assert strict["triggered_per_class"]["NO"] == 0.0
    assert loose["triggered_per_subclass"] == {"mira": 1.0}
    assert loose["calls_per_non_event_star"] == 4.0
    assert strict["calls_per_star"] == pytest.approx(0.8)


def test_rules_parse_from_name_high_low() -> None:
    cadences = parse_rules(DEFAULT_RULES, DEFAULT_CADENCE)
    assert cadences["shipped"] == DEFAULT_CADENCE
    assert str(cadences["loose"].low_cadence) == "6/10@2.5:200"
    assert cadences["loose-avg"].high_cadence.average == 4
    for bad in ("loose", "=5/5@3:250;10/10@3:400", "x=5/5@3:250", "x=5/5@3:250;10/10"):
        with pytest.raises(TriggerInputError):
            parse_rules([bad], DEFAULT_CADENCE)
