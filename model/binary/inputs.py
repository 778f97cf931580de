"""A star's light curve as the binary-lens flow reads it: one merged multi-site sequence.

Shared by training (:mod:`model.binary.simulate`) and inference (:mod:`model.binary.posterior`),
so both see exactly the same preprocessing. Steps:

1. The daemon's cleaning and site choice (:func:`model.features.select_sites`: valid I-band
   points of one dataset per site, ``hjd <= as_of``) and its isolated-spike filter
   (:func:`model.features.outlier_mask`), restricted to the :data:`WINDOW_DAYS` before the last
   point.
2. Per site, the flux relative to the site's median (DIA reference mismatches differ by site);
   flux and error divided by the star's median error (``flux_scale``, DIA units), so the
   sequence is in units of the star's typical error.
3. Merged over sites by time; at most :data:`MAX_POINTS` points kept: the
   ``MAX_POINTS // 2`` with the largest excess (the peak and any anomaly, which a plain
   thinning of a 4/h season would miss) and the rest evenly spaced in index among the others;
   then in time order.

Per point, :data:`POINT_FEATURES`: time relative to the last point in units of 100 days (<= 0),
``arcsinh`` of the scaled flux (linear within a few errors, logarithmic for bright peaks), the
log of the scaled error, and a one-hot site. One global feature: log10 ``flux_scale``, which
tells a bright source from a faint one (photon noise grows with the baseline flux).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from consumer.constants import SITES
from consumer.exceptions import LensNetError
from consumer.seasons.archive import Star
from model.features import outlier_mask as spike_mask
from model.features import select_sites

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

WINDOW_DAYS: Final = 120.0
MAX_POINTS: Final = 256
MIN_POINTS: Final = 20
TIME_UNIT_DAYS: Final = 100.0
POINT_FEATURES: Final = ("time", "flux", "log_flux_err", "CTIO", "SAAO", "SSO")
N_POINT_FEATURES: Final = len(POINT_FEATURES)


class LightCurveInputError(LensNetError, ValueError):
    """A light curve has too few valid points for the flow."""


@dataclass(frozen=True, eq=False)
class FlowInput:
    """One light curve as flow input.

    Attributes
    ----------
    points : (n, 6) float32, :data:`POINT_FEATURES`, time-ordered, n <= :data:`MAX_POINTS`.
    log_flux_scale : log10 of the star's median flux error (DIA units).
    t_last : full HJD of the last point (the flow's times are relative to it).
    """

    points: F32
    log_flux_scale: float
    t_last: float


def select_points(excess: F64, max_points: int = MAX_POINTS) -> npt.NDArray[np.int64]:
    """Indices (sorted) of at most ``max_points`` points: half the largest ``excess``, half
    evenly spaced among the rest (step 3 of the module docstring)."""
    n = len(excess)
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    n_top = max_points // 2
    top = np.argsort(-excess, kind="stable")[:n_top]
    rest = np.setdiff1d(np.arange(n), top)
    spaced = rest[np.linspace(0, len(rest) - 1, max_points - n_top).round().astype(np.int64)]
    return np.sort(np.concatenate([top, spaced])).astype(np.int64)


def flow_input(star: Star, as_of: float = np.inf) -> FlowInput:
    """The star's light curve up to ``as_of`` (full HJD) as flow input.

    Raises
    ------
    LightCurveInputError
        Fewer than :data:`MIN_POINTS` valid I-band points in the window.
    """
    sites = [s for s in select_sites(star, as_of=as_of) if s is not None and len(s)]
    series = [(SITES.index(s.site), s.hjd, s.flux, s.flux_err) for s in sites]
    return series_input(series, name=star.name)


def series_input(series: Sequence[tuple[int, F64, F64, F64]], name: str = "") -> FlowInput:
    """Flow input from already chosen per-site series: ``(site index into SITES, hjd (n,),
    flux (n,), flux_err (n,))``, each time-ordered, valid I-band points (steps 1-3 from the
    spike filter on). The daemon's path: an alert's light curve is
    :func:`~model.features.select_sites`' output already.

    Raises
    ------
    LightCurveInputError
        Fewer than :data:`MIN_POINTS` points in the window.
    """
    series = [part for part in series if len(part[1])]
    if not series:
        raise LightCurveInputError(f"star {name}: no valid I-band points")
    t_last = max(float(part[1][-1]) for part in series)
    hjd, flux, flux_err, site_index = [], [], [], []
    for site, series_hjd, series_flux, series_err in series:
        keep = ~spike_mask(series_flux) & (series_hjd >= t_last - WINDOW_DAYS)
        if not keep.any():
            continue
        hjd.append(series_hjd[keep])
        flux.append(series_flux[keep] - np.median(series_flux[keep]))
        flux_err.append(series_err[keep])
        site_index.append(np.full(int(keep.sum()), site))
    n = sum(len(h) for h in hjd)
    if n < MIN_POINTS:
        raise LightCurveInputError(
            f"star {name}: {n} valid I-band points in the last {WINDOW_DAYS:g} days, "
            f"fewer than {MIN_POINTS}"
        )
    t, f, e, k = (np.concatenate(a) for a in (hjd, flux, flux_err, site_index))
    order = np.argsort(t, kind="stable")
    t, f, e, k = t[order], f[order], e[order], k[order]
    scale = float(np.median(e))
    chosen = select_points(f / scale)
    t, f, e, k = t[chosen], f[chosen], e[chosen], k[chosen]
    points = np.zeros((len(t), N_POINT_FEATURES), dtype=np.float32)
    points[:, 0] = (t - t_last) / TIME_UNIT_DAYS
    points[:, 1] = np.arcsinh(f / scale)
    points[:, 2] = np.log(e / scale)
    points[np.arange(len(t)), 3 + k] = 1.0
    return FlowInput(points=points, log_flux_scale=float(np.log10(scale)), t_last=t_last)


def collate(inputs: list[FlowInput]) -> tuple[F32, npt.NDArray[np.bool_], F32]:
    """Batch arrays: points (B, L, 6) zero-padded after each sequence, mask (B, L) True where
    real, context (B, 1) log10 flux scale; L the longest sequence."""
    length = max(len(i.points) for i in inputs)
    points = np.zeros((len(inputs), length, N_POINT_FEATURES), dtype=np.float32)
    mask = np.zeros((len(inputs), length), dtype=bool)
    for b, item in enumerate(inputs):
        points[b, : len(item.points)] = item.points
        mask[b, : len(item.points)] = True
    scale = np.asarray([[i.log_flux_scale] for i in inputs], dtype=np.float32)
    return points, mask, scale
