"""The magnification gate: a LensNet "yes" alerts only if a point lens could make that rise.

LensNet scores a light curve's shape; it does not ask whether a lens could have made it. Most
of the non-event stars it alerts on are slow brightenings (long-period variables, slow
trends): rises that stay shallow. Fitted by a point lens (:mod:`consumer.pointlens.fit`) such
a rise needs a peak magnification ``A(u0)`` close to 1 (a large ``u0``), while the events the
broker exists for, the ones worth a telescope, are magnified several times at their peak. So
a candidate at or above the alert threshold alerts only when its fitted peak magnification
reaches ``min_peak_magnification``; otherwise it is treated as a rejected candidate and
scored again after ``rescore_days`` more data, when a real event's rise has usually steepened
and its fitted magnification grown (a deferral, not a verdict).

Chosen on the validation seasons with the three LensNet seeds (model/README.md, "The
magnification gate"): at ``A >= 2`` the non-event stars alerted at 0.955 fall from 2.8 % to
1.0 % (at 0.45 from 14.5 % to 6.0 %) and slow trends from 17 % to 5 %, for 0.2 (0.6) points
of the events alerted before their peak. A light curve the fit cannot take (too few points)
passes: the gate only vetoes on evidence. The fit is the one the event model publishes, on the
same points the alert carries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from consumer.pointlens.fit import Datasets, FitInputError, fit, make_datasets

if TYPE_CHECKING:
    from model.features import Candidate

#: The default of ``ModelSettings.min_peak_magnification`` (chosen on the validation seasons).
MIN_PEAK_MAGNIFICATION = 2.0


def candidate_datasets(candidate: Candidate) -> Datasets:
    """The points LensNet saw, one dataset per site, as the point-lens fit takes them: the same
    points (and order) as the alert's light curve gives the event model."""
    parts = []
    for series in candidate.series:
        if series is None or len(series) == 0:
            continue
        order = np.argsort(series.hjd, kind="stable")
        parts.append(
            (
                series.site,
                series.field,
                series.hjd[order],
                series.flux[order],
                series.flux_err[order],
            )
        )
    return make_datasets(parts)


def fitted_peak_magnification(data: Datasets, name: str = "star") -> float:
    """Peak magnification ``A(u0)`` of the point-lens fit of ``data``; NaN when the fit cannot
    run (fewer points than it needs, or unusable values)."""
    try:
        return float(fit(data, name=name).peak_magnification)
    except FitInputError:
        return math.nan


@dataclass(frozen=True, slots=True)
class MagnificationGate:
    """``minimum``: the peak magnification a point-lens fit must reach; 0 turns the gate off."""

    minimum: float = MIN_PEAK_MAGNIFICATION

    @property
    def enabled(self) -> bool:
        return self.minimum > 0

    def passes(self, magnification: float) -> bool:
        """Whether a candidate with this fitted peak magnification may alert (NaN: no fit,
        no veto)."""
        return not self.enabled or math.isnan(magnification) or magnification >= self.minimum
