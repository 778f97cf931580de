"""Anomalies: recent points that the point-lens fit cannot explain, coherently, across sites.

In the spirit of the real-time anomaly detectors of microlensing follow-up (SIGNALMEN, Dominik
et al. 2007; ARTEMiS): the point-lens model is fitted to all the data with robust weights
(:mod:`consumer.pointlens.fit`: errors rescaled per dataset, gross outliers left out), and the
newest points are tested against it. A point's deviation is its residual in units of its
scaled error, ``z = (flux - model) / (flux_err * error_scale)``. An anomaly is a *run*: points
consecutive in time over all datasets, all deviating by at least ``n_sigma`` with the same
sign, at least ``min_run`` of them when they come from two or more sites (a deviation seen from
two continents is the sky's, not one telescope's) and ``min_run_one_site`` when from one site
only; the run must end within the last ``recent_days`` of data (it is new). As SIGNALMEN
does, a run that deviates only mildly (``suspect_sigma``) is tested again against a fit that
leaves its points out, since a fit that includes them bends towards them. Lone outliers, a bad
night at one site and noise do not make runs; a planet's caustic crossing or cusp approach
does, and so does a binary lens or a wrong point-lens fit, which is why only what persists
after a refit on all the data counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from consumer.pointlens import kernels
from consumer.pointlens.fit import Datasets, FitInputError, PointLensFit, fit

F64 = npt.NDArray[np.float64]

#: n_sigma, runs and recent days chosen on the development season (event-rich seed 2101);
#: the second look from 1.5 sigma (was 2) on the validation seasons 2001-2002, which raised
#: the planetary deviations flagged in time from 75 % to 81 % with no point-lens event
#: flagged (model/artifacts/event_model/report.md).
N_SIGMA: Final = 2.5
MIN_RUN: Final = 3
MIN_RUN_ONE_SITE: Final = 3
RECENT_DAYS: Final = 3.0
SUSPECT_SIGMA: Final = 1.5


@dataclass(frozen=True)
class AnomalyRule:
    """When a run of deviating points is an anomaly (see the module docstring)."""

    n_sigma: float = N_SIGMA
    min_run: int = MIN_RUN
    min_run_one_site: int = MIN_RUN_ONE_SITE
    recent_days: float = RECENT_DAYS
    #: A run at this level is refitted without its points and tested again (>= n_sigma: off).
    suspect_sigma: float = SUSPECT_SIGMA


@dataclass(frozen=True)
class Anomaly:
    """The qualifying run reported (the newest): where it is and how far it deviates."""

    start_hjd: float
    end_hjd: float
    n_points: int
    sites: tuple[str, ...]
    sign: int  # +1 brighter than the point lens, -1 fainter
    max_sigma: float  # largest |z| in the run
    chi2: float  # sum of z**2 over the run


def deviations(data: Datasets, model: PointLensFit) -> F64:
    """(N,) residual of every point in units of its scaled error (``z`` above)."""
    fits = model.datasets
    return kernels.deviations(
        data.t, data.flux, data.flux_err, data.offsets, model.t0, model.u0, model.tE,
        np.array([f.fs for f in fits]), np.array([f.fb for f in fits]),
        np.array([f.error_scale for f in fits]),
    )  # fmt: skip


def find_anomaly(
    data: Datasets, model: PointLensFit, rule: AnomalyRule = AnomalyRule()
) -> Anomaly | None:
    """The newest run of ``data`` against ``model`` that makes an anomaly, or None.

    The strongest run at ``suspect_sigma`` is a suspect: the model is refitted without its
    points (a deviation the fit partly absorbed shows in full against a fit that does not see
    it), and the newest run that qualifies against either fit is the anomaly (the stronger of
    two that end at the same point).
    """
    if len(data) == 0:
        return None
    order = np.argsort(data.t, kind="stable")
    names = sorted(set(data.sites))
    code = np.array([names.index(s) for s in data.sites], dtype=np.int64)
    site = np.repeat(code, np.diff(data.offsets))[order]
    t = data.t[order]
    z = deviations(data, model)[order]
    found = _strongest_run(t, z, site, names, rule, rule.n_sigma, newest=True)
    suspect = _strongest_run(t, z, site, names, rule, rule.suspect_sigma)
    if suspect is not None and rule.suspect_sigma < rule.n_sigma:
        # The second look, also when a run qualifies already: a deviation at the end of the
        # data bends the fit towards it, and the points just before may then stand out more,
        # with the other sign, than the deviation itself.
        exclude = np.zeros(len(t), dtype=bool)
        exclude[order[suspect[1]]] = True
        try:
            refit = fit(data, exclude=exclude)
        except FitInputError:
            refit = None
        if refit is not None:
            z_refit = deviations(data, refit)[order]
            again = _strongest_run(t, z_refit, site, names, rule, rule.n_sigma, newest=True)
            if again is not None and (found is None or _newer(again[0], found[0])):
                found = again
    return None if found is None else found[0]


def _newer(a: Anomaly, b: Anomaly) -> bool:
    """``a`` ends later than ``b``, or at the same point and deviates more."""
    return (a.end_hjd, a.chi2) > (b.end_hjd, b.chi2)


def _strongest_run(
    t: F64,
    z: F64,
    site: npt.NDArray[np.int64],
    names: list[str],
    rule: AnomalyRule,
    n_sigma: float,
    newest: bool = False,
) -> tuple[Anomaly, slice] | None:
    """The qualifying run with the largest sum of z**2 (points in time order), and where it
    lies; ``newest``: the qualifying run that ends last instead (what is news to an observer:
    a fit bent by a deviation at the end of the data can make an older stretch stand out more,
    with the other sign). Which run is chosen never changes whether one qualifies. ``site``
    (N,) indexes ``names``."""
    starts, ends = kernels.deviating_runs(
        t, z, site, n_sigma, rule.recent_days, rule.min_run, rule.min_run_one_site
    )
    best: tuple[Anomaly, slice] | None = None
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        # numpy's pairwise sum, as before: chi2 decides which run is reported.
        chi2 = float(np.sum(z[a:b] ** 2))
        if best is None or newest or chi2 > best[0].chi2:  # runs come in time order
            anomaly = Anomaly(
                start_hjd=float(t[a]),
                end_hjd=float(t[b - 1]),
                n_points=b - a,
                sites=tuple(names[c] for c in sorted(set(site[a:b].tolist()))),
                sign=1 if z[a] >= n_sigma else -1,
                max_sigma=float(np.max(np.abs(z[a:b]))),
                chi2=chi2,
            )
            best = (anomaly, slice(a, b))
    return best
