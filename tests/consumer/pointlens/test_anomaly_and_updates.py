"""The anomaly test and the update rule on synthetic light curves."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from consumer.pointlens.anomaly import AnomalyRule, find_anomaly
from consumer.pointlens.fit import Datasets, fit
from consumer.pointlens.updates import Published, baseline_hjd, decide, finished
from tests.consumer.pointlens.test_fit import T0, event


def with_bump(data: Datasets, start: float, end: float, sigma: float) -> Datasets:
    """The light curve with every point in [start, end] raised by ``sigma`` of its errors."""
    inside = (data.t >= start) & (data.t <= end)
    flux = data.flux + np.where(inside, sigma * data.flux_err, 0.0)
    return replace(data, flux=flux)


def test_a_coherent_run_across_sites_is_an_anomaly() -> None:
    rng = np.random.default_rng(1)
    data, _ = event(rng, days=(-30.0, 2.0), n=600)
    bumped = with_bump(data, T0 + 1.0, T0 + 2.0, 8.0)
    anomaly = find_anomaly(bumped, fit(bumped))
    assert anomaly is not None
    assert anomaly.sign == 1
    assert len(anomaly.sites) >= 2
    assert anomaly.start_hjd >= T0 + 0.9


def test_noise_and_lone_outliers_are_not_anomalies() -> None:
    rng = np.random.default_rng(2)
    flagged = 0
    for _ in range(20):
        data, _ = event(rng, days=(-30.0, 2.0), n=400)
        flux = data.flux.copy()
        flux[-5] += 30.0 * data.flux_err[-5]  # one wild point among the newest
        outlier = replace(data, flux=flux)
        flagged += find_anomaly(outlier, fit(outlier)) is not None
    assert flagged == 0


def test_an_old_run_is_not_news() -> None:
    rng = np.random.default_rng(3)
    data, _ = event(rng, days=(-30.0, 6.0), n=600)
    bumped = with_bump(data, T0 - 10.0, T0 - 9.0, 8.0)
    model = fit(bumped)
    assert find_anomaly(bumped, model, AnomalyRule(recent_days=1.0)) is None
    assert find_anomaly(bumped, model, AnomalyRule(recent_days=20.0)) is not None


def published(**changes: object) -> Published:
    values: dict[str, object] = {
        "sequence": 2,
        "kind": "update",
        "as_of": T0 - 5.0,
        "peak_hjd": T0,
        "peak_hjd_err": 0.5,
        "anomalous": False,
    }
    return Published(**(values | changes))  # type: ignore[arg-type]


def test_the_update_rule() -> None:
    rng = np.random.default_rng(4)
    data, _ = event(rng, days=(-30.0, -4.9), n=400)
    model = fit(data)
    as_of = model.t_last
    assert decide(None, model, None, as_of) == "initial"
    assert decide(published(kind="final"), model, None, as_of) is None
    near = published(as_of=as_of - 0.25, peak_hjd=model.peak_hjd, peak_hjd_err=10.0)
    assert decide(near, model, None, as_of) is None
    assert decide(replace(near, as_of=as_of - 1.0), model, None, as_of) == "update"
    moved = replace(near, peak_hjd=model.peak_hjd - 3.0, peak_hjd_err=1.0)
    assert decide(moved, model, None, as_of) == "update"
    assert decide(replace(near, anomalous=True), model, None, as_of) == "update"
    anomaly = find_anomaly(with_bump(data, as_of - 0.5, as_of, 9.0), model)
    assert anomaly is not None
    assert decide(near, model, anomaly, as_of) == "anomaly"
    assert decide(replace(near, anomalous=True), model, anomaly, as_of) is None


def test_following_stops_after_the_return_to_baseline() -> None:
    rng = np.random.default_rng(5)
    data, _ = event(rng, days=(-60.0, 100.0), n=600)
    model = fit(data)
    end = baseline_hjd(model)
    assert end == pytest.approx(T0 + 20.0 * math.sqrt(3.0617**2 - 0.2**2), abs=1.0)
    assert not finished(model, end + 5.0)
    assert finished(model, end + 10.5)
    assert decide(published(), model, None, end + 10.5) == "final"
