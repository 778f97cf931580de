"""The point-lens fit of one star's multi-site light curve: parameters, errors, predicted peak.

Model (point source, point lens, no parallax): every dataset ``d`` (one site and field, its own
reference image and flux scale) is ``flux = fs_d * A(u(t)) + fb_d`` with
``u(t) = sqrt(u0**2 + ((t - t0) / tE)**2)`` and ``A(u) = (u**2 + 2) / (u sqrt(u**2 + 4))``. In
difference-imaging flux ``fb_d`` is the blend *minus* the reference image's flux of the star, so
it says nothing about the blend by itself; ``fs_d`` is the source flux in that dataset's scale.

Method: a compiled Levenberg-Marquardt over ``(t0, ln u0, ln tE)`` with each dataset's
``(fs_d, fb_d)`` solved exactly by weighted least squares at every step (variable projection),
in :mod:`consumer.pointlens.kernels`. Why not iminuit: MIGRAD would carry the 2D linear
parameters as nonlinear ones (up to 15 in all) and call back into Python for every function
value; here a whole fit is one compiled call, and the linear parameters cost one O(N) pass.
Steps:

1. **Starts.** chi2 on a grid of ``t0`` (the time of the highest 3-point run of the light curve,
   and 1-60 days after the last point, for a light curve still rising) x ``tE`` x ``u0``, on a
   subsample of at most :data:`GRID_POINTS` points; LM from the best node of each ``t0`` on the
   subsample, then from the best of those on every point.
2. **Robust rounds** (:data:`ROUNDS`): each dataset's errors are scaled by
   ``max(1, 1.4826 * MAD(residual / flux_err))`` (KMTNet errors are underestimated, by site),
   points beyond :data:`CLIP_SIGMA` scaled errors are left out, and LM continues.
3. **Errors**: the Laplace covariance of ``(t0, ln u0, ln tE)`` and of every ``(fs_d, fb_d)``
   from the inverse of the full Gauss-Newton matrix at the optimum, with the scaled errors; for
   ``t0``, the predicted peak, the interval where the objective profiled over the others rises
   by 1 (:func:`peak_interval`): a still-rising light curve bounds an early peak much better
   than a late one, which a symmetric Laplace error cannot say; the published interval is the
   union of the two (on the development seasons each alone covered the true peak in 57-63 %
   of the fits before the peak, the union in 68 %).

Priors: the fit maximises the posterior with weak priors, ``ln u0`` normal about 0.3 (one
e-fold) and ``ln tE`` normal about 20 days (0.5 dex) (:data:`PRIOR`). A light curve that has
only begun to rise constrains neither alone (a faint source near the lens, or a bright one far
from it, rise alike: the blending degeneracy), and without a prior the optimum runs off to
``u0 -> 0`` or ``u0 -> 3``; with data that constrain them the priors do not matter.

Derived: the predicted peak ``t0 ± t0_err`` (symmetric light curve); the peak magnification
``A(u0)``; the I magnitude of the magnified source at the peak, ``28 - 2.5 log10(fs A(u0))`` in
the dataset with the best-measured ``fs`` (flux scale of :data:`MAG_ZERO_POINT`). That is the
source's own light: difference imaging cannot see the blend, so the star's total magnitude at
the peak is brighter by the blend's share of the baseline, which the reference image knows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from consumer.exceptions import LensNetError
from consumer.pointlens import kernels
from consumer.seasons.archive import MAG_ZERO_POINT, Star

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Grid of the starts: tE (days) x u0 x t0 (see the module docstring).
GRID_TE: Final = (3.0, 10.0, 30.0, 100.0)
GRID_U0: Final = (0.02, 0.1, 0.3, 0.8)
#: Days after the last point tried as t0 (a light curve still rising).
GRID_T0_AHEAD: Final = (1.0, 5.0, 15.0, 40.0)
GRID_POINTS: Final = 300
#: The grid as the kernel takes it: (ln u0, ln tE) at each t0, tE-major (as GRID_TE x GRID_U0).
_GRID_NODES: Final = np.array([[math.log(u0), math.log(tE)] for tE in GRID_TE for u0 in GRID_U0])
_T0_AHEAD: Final = np.array(GRID_T0_AHEAD)
ROUNDS: Final = 2
CLIP_SIGMA: Final = 5.0
MAX_ITERATIONS: Final = 60
#: Steps of each scan of the t0 profile (see :func:`peak_interval`), and its fits' limits: the
#: crossing of a rise of 1 needs the objective to about 0.01.
PROFILE_STEPS: Final = 8
PROFILE_ITERATIONS: Final = 20
PROFILE_TOLERANCE: Final = 1e-2
#: A step that lowers chi2 by less than this ends LM.
TOLERANCE: Final = 1e-4
#: Weak priors (see the module docstring): ln u0 and ln tE normal, about u0 = 0.3 (one e-fold)
#: and tE = 20 d (0.5 dex), the Galactic bulge's typical values and wider than its spread.
PRIOR_U0: Final = 0.3
PRIOR_U0_SD_LN: Final = 1.0
PRIOR_TE_DAYS: Final = 20.0
PRIOR_TE_DEX: Final = 0.5
PRIOR: Final = np.array(
    [math.log(PRIOR_U0), PRIOR_U0_SD_LN, math.log(PRIOR_TE_DAYS), PRIOR_TE_DEX * math.log(10.0)]
)
#: Fewer points than this (all datasets) is not fitted.
MIN_POINTS: Final = 8
#: The most recent points kept per site, as the daemon's store holds them.
CAPACITY_PER_SITE: Final = 1500
_I_BAND: Final = 0


class FitInputError(LensNetError, ValueError):
    """The light curve cannot be fitted (too few points, bad columns); says which star."""


@dataclass(frozen=True)
class Datasets:
    """A star's light curve as the fit takes it: datasets concatenated, each time-sorted.

    ``t``, ``flux``, ``flux_err`` (N,) full HJD and DIA flux units; ``offsets`` (D + 1,);
    ``sites`` and ``fields`` (D,) name each dataset.
    """

    t: F64
    flux: F64
    flux_err: F64
    offsets: I64
    sites: tuple[str, ...]
    fields: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.t)

    def dataset_of(self) -> I64:
        """(N,) dataset index of every point."""
        return np.repeat(np.arange(len(self.sites)), np.diff(self.offsets))


@dataclass(frozen=True)
class DatasetFit:
    """One dataset's linear parameters and what the fit made of its errors."""

    site: str
    field: int
    fs: float
    fs_err: float
    fb: float
    fb_err: float
    n_points: int  # used in the fit (outliers left out)
    error_scale: float  # its flux_err were multiplied by this


@dataclass(frozen=True)
class PointLensFit:
    """A point-lens fit and what follows from it (times full HJD, fluxes DIA units).

    ``covariance`` (3, 3) is that of ``(t0, ln u0, ln tE)``; the ``*_err`` are one-sigma errors
    from it (NaN when the fit does not constrain the parameter, e.g. an ill-conditioned matrix),
    except ``t0_err``, half the width of the profile interval ``[t0_lower, t0_upper]``.
    """

    t0: float
    u0: float
    tE: float  # noqa: N815 - the field's name for the Einstein time
    t0_err: float  # half the width of [t0_lower, t0_upper]
    u0_err: float
    tE_err: float  # noqa: N815
    covariance: F64
    datasets: tuple[DatasetFit, ...]
    reference: int  # index of the dataset the magnitudes are measured in
    peak_magnification: float
    peak_magnification_err: float
    peak_mag: float  # I of the magnified source at the peak (blend excluded)
    peak_mag_err: float
    source_mag: float
    chi2: float
    dof: int
    n_points: int
    iterations: int
    converged: bool
    t_first: float
    t_last: float  # newest point fitted
    #: The 1-sigma interval of t0 from its likelihood profile (asymmetric; may be infinite).
    t0_lower: float = math.nan
    t0_upper: float = math.nan

    @property
    def peak_hjd(self) -> float:
        """Predicted time of the peak (the point lens is symmetric about t0)."""
        return self.t0

    @property
    def peak_hjd_err(self) -> float:
        return self.t0_err

    @property
    def peak_seen(self) -> bool:
        """The fitted peak lies within the data (else the light curve is still rising, or the
        peak fell in a gap)."""
        return self.t_first <= self.t0 <= self.t_last

    def magnification(self, t: npt.ArrayLike) -> F64:
        """A(t) of the fitted lens, shape of ``t``."""
        tau = (np.asarray(t, dtype=np.float64) - self.t0) / self.tE
        return magnification(np.sqrt(self.u0 * self.u0 + tau * tau))

    def model_flux(self, t: npt.ArrayLike, dataset: int) -> F64:
        """Model flux of ``dataset`` at ``t`` (its own flux scale)."""
        fit = self.datasets[dataset]
        return fit.fs * self.magnification(t) + fit.fb


def magnification(u: npt.ArrayLike) -> F64:
    """Point-lens magnification of separations ``u`` (Einstein radii), numpy."""
    u = np.maximum(np.abs(np.asarray(u, dtype=np.float64)), kernels.U_FLOOR)
    u2 = u * u
    return np.asarray((u2 + 2.0) / (u * np.sqrt(u2 + 4.0)), dtype=np.float64)


def star_datasets(
    star: Star, *, as_of: float = math.inf, capacity_per_site: int = CAPACITY_PER_SITE
) -> Datasets:
    """A star's I-band datasets as the fit takes them: valid points up to ``as_of`` (full
    HJD), the most recent ``capacity_per_site`` per site (as the daemon holds them)."""
    from model.features import valid_mask  # the cleaning LensNet's preprocessing uses

    kept: list[tuple[str, int, F64, F64, F64]] = []
    for site in sorted({d.site for d in star.datasets}):
        parts = []
        for dataset in (d for d in star.datasets if d.site == site):
            keep = valid_mask(dataset) & (dataset.band == _I_BAND) & (dataset.hjd <= as_of)
            if keep.any():
                parts.append(
                    (dataset.field, dataset.hjd[keep], dataset.flux[keep], dataset.flux_err[keep])
                )
        if not parts:
            continue
        newest = np.sort(np.concatenate([p[1] for p in parts]))[::-1]
        cut = newest[capacity_per_site - 1] if len(newest) >= capacity_per_site else -math.inf
        for field, hjd, flux, flux_err in parts:
            keep = hjd >= cut
            order = np.argsort(hjd[keep], kind="stable")
            kept.append((site, field, hjd[keep][order], flux[keep][order], flux_err[keep][order]))
    return make_datasets(kept)


def make_datasets(parts: Sequence[tuple[str, int, F64, F64, F64]]) -> Datasets:
    """:class:`Datasets` from ``(site, field, hjd, flux, flux_err)`` tuples (each sorted);
    empty ones are dropped."""
    parts = [p for p in parts if len(p[2])]
    sizes = [len(p[2]) for p in parts]
    return Datasets(
        t=np.concatenate([p[2] for p in parts] + [np.zeros(0)]).astype(np.float64),
        flux=np.concatenate([p[3] for p in parts] + [np.zeros(0)]).astype(np.float64),
        flux_err=np.concatenate([p[4] for p in parts] + [np.zeros(0)]).astype(np.float64),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        sites=tuple(p[0] for p in parts),
        fields=tuple(int(p[1]) for p in parts),
    )


def fit(
    data: Datasets, *, name: str = "star", exclude: npt.NDArray[np.bool_] | None = None
) -> PointLensFit:
    """Fit the point-lens model to ``data`` (see the module docstring); points where
    ``exclude`` (N,) is true are left out (an anomaly under test).

    Raises
    ------
    FitInputError
        Fewer than :data:`MIN_POINTS` points, or a non-finite value or ``flux_err <= 0``.
    """
    n = len(data)
    if n < MIN_POINTS:
        raise FitInputError(f"{name}: {n} points, the point-lens fit needs {MIN_POINTS}")
    if not kernels.valid_input(data.t, data.flux, data.flux_err):
        raise FitInputError(f"{name}: non-finite values or flux_err <= 0 in the light curve")
    t_ref = float(data.t.max())
    t = data.t - t_ref  # days before the newest point: small numbers in the kernels
    keep = np.ones(n, dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    # 1. starts and 2. robust rounds, one compiled call
    p, objective, iterations, converged, weight, used, scale = kernels.fit_steps(
        t, data.flux, data.flux_err, data.offsets, keep, _T0_AHEAD, _GRID_NODES, PRIOR,
        GRID_POINTS, ROUNDS, CLIP_SIGMA, MAX_ITERATIONS, TOLERANCE,
    )  # fmt: skip

    # 3. errors
    cov_p, fs, fb, cov_linear, cov_cross, chi2 = covariance(t, data.flux, weight, data.offsets, p)
    # The last LM's objective is the one at p under these weights (what linear_fit would give).
    lower, upper = peak_interval(
        t, data.flux, weight, data.offsets, p, float(cov_p[0, 0]), best=objective
    )
    # The union with the Laplace interval: where the profile follows a narrow valley into a
    # neighbouring solution it can be the narrower of the two (development seasons: the
    # union covers the true peak at the rate a 1-sigma interval should, either alone does not).
    laplace = math.sqrt(cov_p[0, 0]) if cov_p[0, 0] > 0 else math.nan
    if math.isfinite(laplace):
        lower, upper = min(lower, -laplace), max(upper, laplace)
    return _summarise(data, t_ref, p, cov_p, fs, fb, cov_linear, cov_cross, chi2, used, scale,
                      iterations, converged, lower, upper)  # fmt: skip


def peak_interval(
    t: F64,
    flux: F64,
    weight: F64,
    offsets: I64,
    p: F64,
    variance: float,
    *,
    best: float | None = None,
) -> tuple[float, float]:
    """The 1-sigma interval of t0 from the profile of the objective (``Delta = 1``), as
    offsets from ``p[0]``: asymmetric where the light curve is still rising (a later peak is
    easier to hide than an earlier one). Steps of the Laplace sigma, then of four sigma (or of
    a day, then a week, when the Laplace sigma is undefined); +-inf when the data do
    not bound it within :data:`PROFILE_STEPS` of the large steps. ``best``: the objective at
    ``p`` (chi2 + prior penalty), computed here when not given."""
    if best is None:
        best = kernels.linear_fit(
            t, flux, weight, offsets, p, np.empty(len(t)), np.empty(len(offsets) - 1),
            np.empty(len(offsets) - 1),
        ) + kernels.prior_penalty(p, PRIOR)  # fmt: skip
    sigma = math.sqrt(variance) if math.isfinite(variance) and variance > 0 else math.nan
    fine, coarse = (sigma, 4.0 * sigma) if math.isfinite(sigma) else (1.0, 7.0)
    lower, upper = kernels.profile_interval(
        t, flux, weight, offsets, p, PRIOR, best, fine, PROFILE_STEPS, 1.0, PROFILE_ITERATIONS,
        PROFILE_TOLERANCE,
    )  # fmt: skip
    if not (math.isfinite(lower) and math.isfinite(upper)):
        wide = kernels.profile_interval(
            t, flux, weight, offsets, p, PRIOR, best, coarse, PROFILE_STEPS, 1.0,
            PROFILE_ITERATIONS, PROFILE_TOLERANCE,
        )  # fmt: skip
        lower = lower if math.isfinite(lower) else wide[0]
        upper = upper if math.isfinite(upper) else wide[1]
    return lower, upper


def covariance(
    t: F64, flux: F64, weight: F64, offsets: I64, p: F64
) -> tuple[F64, F64, F64, F64, F64, float]:
    """Laplace covariance at ``p`` from the inverse of the full Gauss-Newton matrix, by block
    elimination of each dataset's ``(fs, fb)``.

    Returns ``(cov_p (3, 3), fs (D,), fb (D,), cov_linear (D, 2, 2), cov_cross (D, 3, 2),
    chi2)``: the covariance of ``p``, of each ``(fs, fb)``, and between them; NaN where the
    matrix is singular.
    """
    schur, cross, linear, fs, fb, chi2 = kernels.blocks(t, flux, weight, offsets, p, PRIOR)
    n_sets = len(fs)
    cov_p = np.full((3, 3), np.nan)
    cov_linear = np.full((n_sets, 2, 2), np.nan)
    cov_cross = np.full((n_sets, 3, 2), np.nan)
    # Not positive definite (a bound, or rounding in a flat direction): nothing to invert.
    if not np.isfinite(schur).all() or np.linalg.eigvalsh(schur).min() <= 1e-14 * abs(
        np.trace(schur)
    ):
        return cov_p, fs, fb, cov_linear, cov_cross, chi2
    cov_p = np.linalg.inv(schur)
    cov_p = 0.5 * (cov_p + cov_p.T)
    # All datasets' blocks in one call each: numpy applies the same LAPACK and BLAS routines
    # to every matrix of a stack, so the bits are those of one call per dataset.
    good = np.flatnonzero(np.linalg.cond(linear) <= 1e14)
    if len(good):
        inverse = np.linalg.inv(linear[good])
        mix = inverse @ cross[good].transpose(0, 2, 1)  # (G, 2, 3) = L^-1 C^T
        mix_t = mix.transpose(0, 2, 1)
        cov_cross[good] = -(cov_p @ mix_t)
        cov_linear[good] = inverse + mix @ cov_p @ mix_t
    return cov_p, fs, fb, cov_linear, cov_cross, float(chi2)


def _summarise(
    data: Datasets,
    t_ref: float,
    p: F64,
    cov_p: F64,
    fs: F64,
    fb: F64,
    cov_linear: F64,
    cov_cross: F64,
    chi2: float,
    used: npt.NDArray[np.bool_],
    scale: F64,
    iterations: int,
    converged: bool,
    lower: float,
    upper: float,
) -> PointLensFit:
    """The :class:`PointLensFit` of the optimum ``p`` with its errors; ``lower``, ``upper``
    the profile interval of t0 as offsets from it (days)."""
    t0, u0, tE = t_ref + float(p[0]), math.exp(float(p[1])), math.exp(float(p[2]))
    # sqrt(max(var, 0)): NaN stays NaN (Python's max keeps its first argument then).
    sigma = [math.sqrt(max(float(cov_p[j, j]), 0.0)) for j in range(3)]
    counts = np.diff(np.concatenate([[0], np.cumsum(used)])[data.offsets])
    n_sets = len(data.sites)
    fs_err = [math.sqrt(max(float(cov_linear[d, 0, 0]), 0.0)) for d in range(n_sets)]
    fb_err = [math.sqrt(max(float(cov_linear[d, 1, 1]), 0.0)) for d in range(n_sets)]
    fs_list, fb_list = fs.tolist(), fb.tolist()
    datasets = tuple(
        DatasetFit(
            site=data.sites[d],
            field=data.fields[d],
            fs=fs_list[d],
            fs_err=fs_err[d],
            fb=fb_list[d],
            fb_err=fb_err[d],
            n_points=int(counts[d]),
            error_scale=float(scale[d]),
        )
        for d in range(n_sets)
    )
    # The reference dataset: fs measured best relative to itself (the first of equals).
    reference, best_quality = 0, -math.inf
    for d, f in enumerate(datasets):
        quality = f.fs / f.fs_err if f.fs > 0 and f.fs_err > 0 else -math.inf
        if quality > best_quality:
            reference, best_quality = d, quality
    # Peak magnification and the magnified source's magnitude, by the delta method over
    # (ln u0, fs_ref): d ln A / d ln u0 = u0 A'(u0) / A(u0).
    u_peak = max(u0, kernels.U_FLOOR)  # as magnification(u0) has it (u0 > 0)
    u2_peak = u_peak * u_peak
    a_peak = (u2_peak + 2.0) / (u_peak * math.sqrt(u2_peak + 4.0))
    u2 = u0 * u0
    slope = -8.0 / (u2 * (u2 + 4.0) ** 1.5)
    dlna = u0 * slope / a_peak
    var_lnu0 = float(cov_p[1, 1])
    a_err = (
        a_peak * abs(dlna) * math.sqrt(max(var_lnu0, 0.0)) if math.isfinite(var_lnu0) else math.nan
    )
    ref = datasets[reference]
    if ref.fs > 0:
        cov_lnu0_fs = float(cov_cross[reference, 1, 0])
        var_lnflux = (
            dlna * dlna * var_lnu0 + (ref.fs_err / ref.fs) ** 2 + 2.0 * dlna * cov_lnu0_fs / ref.fs
        )
        peak_mag = MAG_ZERO_POINT - 2.5 * math.log10(ref.fs * a_peak)
        source_mag = MAG_ZERO_POINT - 2.5 * math.log10(ref.fs)
        peak_mag_err = 2.5 / math.log(10.0) * math.sqrt(max(var_lnflux, 0.0))
        if not math.isfinite(var_lnflux):
            peak_mag_err = math.nan
    else:
        peak_mag = source_mag = peak_mag_err = math.nan
    n_used = int(counts.sum())
    return PointLensFit(
        t0=t0,
        u0=u0,
        tE=tE,
        t0_err=0.5 * (upper - lower),
        u0_err=u0 * sigma[1],
        tE_err=tE * sigma[2],
        covariance=cov_p,
        datasets=datasets,
        reference=reference,
        peak_magnification=a_peak,
        peak_magnification_err=a_err,
        peak_mag=peak_mag,
        peak_mag_err=peak_mag_err,
        source_mag=source_mag,
        chi2=float(chi2),
        dof=max(n_used - 3 - 2 * len(datasets), 0),
        n_points=n_used,
        iterations=int(iterations),
        converged=bool(converged),
        t_first=float(data.t.min()),
        t_last=t_ref,
        t0_lower=t0 + lower,
        t0_upper=t0 + upper,
    )
