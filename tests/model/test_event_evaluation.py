"""The event-model evaluation's truth: planetary deviations against the true point lens and
against the best-fitting one."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from consumer.seasons.archive import Star
from model.evaluation.event_model import (
    DEVIATION_SIGMA,
    _deviation,
    _deviation_against_fit,
    event_rich,
)
from model.simulate import Label, SiteTruth, simulate_star_truth

CONFIG = event_rich(2001, 300)


def event(index: int) -> tuple[Star, Label, tuple[SiteTruth, ...]]:
    return simulate_star_truth(CONFIG, index)


def strong(deviation: dict[str, Any]) -> npt.NDArray[np.float64]:
    times = np.asarray(deviation["deviation_times"])
    return times[np.asarray(deviation["deviation_sigma"]) >= DEVIATION_SIGMA]


def first_event(subclass: str) -> int:
    for index in range(300):
        _, label, _ = event(index)
        if label.label == "YES" and label.subclass == subclass:
            return index
    raise AssertionError(subclass)


def test_a_point_lens_event_deviates_from_no_point_lens() -> None:
    star, label, truth = event(first_event("pspl"))
    assert len(strong(_deviation(star, label, truth))) == 0
    t0 = label.params["t0"]
    # asked about the days around its peak: the best fit follows the noiseless signal there
    found = _deviation_against_fit(star, label, truth, np.array([t0 - 3.0, t0, t0 + 3.0]))
    assert len(found) < 3


def test_a_central_caustic_deviation_that_a_point_lens_absorbs() -> None:
    """Validation event 2001/1 (u0 0.001, q 1.2e-3): the signal departs from the point lens of
    the true parameters by up to ~170 errors near the peak, and from the best-fitting point
    lens by less than 3 errors everywhere: a point lens with u0 ~ 0.02 explains it."""
    star, label, truth = event(1)
    assert label.subclass == "planetary"
    times = strong(_deviation(star, label, truth))
    assert len(times) >= 10
    against_fit = _deviation_against_fit(star, label, truth, times)
    assert len(against_fit) < 3  # not detectable from point-lens residuals at all
    assert all(times[0] - 1.0 <= t <= times[-1] for t in against_fit)


def test_too_few_deviating_points_give_none() -> None:
    star, label, truth = event(1)
    assert _deviation_against_fit(star, label, truth, np.array([2461100.0])) == []
