"""The AlertFinder trigger (Kim et al. 2018): k of the last n points high, then a broken line.

A star has one or more datasets, its light curve from each site (and field): times ``t``
(days, HJD), ``flux`` and ``flux_err`` (DIA flux units). For every non-empty combination S of
the star's non-empty datasets:

1. Point i of dataset d is *high* when ``flux_i - median(flux_d) >= n_sigma * flux_err_i``
   (median over every point of d; with ``baseline_part = j > 1`` over the oldest
   ``ceil(N_d / j)`` points only, so that a rise holding half a short dataset does not lift its
   own baseline; ``j = 1``, the published rule, is the default). With ``average = m > 1`` the
   point stands for the weighted mean of itself and the ``m - 1`` points before it in d (fewer
   at the start of d): it is high
   when that mean is ``n_sigma`` of its own error, ``(sum flux_err**-2) ** -0.5``, above the
   median. Averaging lets a rise too faint for single points pass (an event whose points sit
   1.5 errors up passes 3 sigma with m = 4); ``m = 1``, the published rule, is the default.
2. S *passes the rising test* when at least ``k`` of its last ``n`` points are high, its points
   merged in (time, dataset index, position) order; fewer than ``n`` points never pass. With
   ``k == n`` this is the published "N_high consecutive high points".
3. A broken line ``flux_i = c_d(i) + slope * max(0, t_i - t_break)`` is fitted by weighted least
   squares (weights ``flux_err**-2``): one intercept per dataset, one slope, and ``t_break`` over
   the distinct times of S except the last, keeping the smallest chi2 among fits with
   ``slope > 0``. ``dchi2 = chi2_flat - chi2_broken`` against per-dataset weighted means, 0 when
   no break gives a positive slope (``t_break`` is then NaN and ``slope`` 0).
4. S *triggers* when it passes the rising test and ``dchi2 >= dchi2_min``; the star triggers
   when any S does.

Which combination is reported: the triggering S with the largest dchi2; when none triggers,
the S with the largest dchi2 among those passing the rising test; when none passes, the largest
dchi2 among all. Ties go to fewer datasets, then to the lower bitmask; equal dchi2 between break
times of one S (only with rounding-identical values) to the later break. Only the combinations
that can be reported are fitted: if any S passes the rising test, the others are skipped.

The line LensNet sees (:func:`fitted_line`) is ``c_d + slope * max(0, t - t_break)`` for the
datasets in the reported combination and the dataset's weighted mean flux for the others;
training and serving both call it.

Input handling (:func:`evaluate`, one star):

- Points with a non-finite ``t``, ``flux`` or ``flux_err``, or with ``flux_err <= 0``, are
  dropped and counted in ``TriggerResult.n_dropped``: the stream writes missing photometry as
  NaN, and such points carry no usable weight.
- Each dataset is sorted by time (stable, so duplicates keep their input order).
- Duplicate times are kept as separate observations; a duplicated time is one break candidate.
- Empty datasets (given empty, or empty once cleaned) are ignored but keep their index: they
  are never part of a combination, and their intercept and baseline are NaN.
- Fewer than ``n`` points is not an error: no combination passes the rising test. A star with
  no points at all gives ``triggered=False``, ``datasets=()``.
- Errors (:class:`TriggerInputError`): columns that are not 1-D numbers of equal length, more
  than :data:`MAX_DATASETS` datasets, or a rule with ``k < 1``, ``n < k``, ``n_sigma < 0``,
  ``average < 1``, ``baseline_part < 1`` or a non-finite / negative ``dchi2_min``.

The batch entry points (:func:`evaluate_batch`, :func:`rising_batch`) evaluate many stars in
one compiled call on concatenated (CSR-like) arrays. Their input must already be clean and
time-sorted per dataset (the daemon cleans its buffers); with ``check=True`` (the default) this
is verified in O(points) numpy and a violation raises :class:`TriggerInputError` naming the
first bad dataset; ``check=False`` skips that pass when the caller guarantees it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from consumer.alertfinder import kernels
from consumer.exceptions import LensNetError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: One dataset: times (days), fluxes and flux errors (DIA flux units), each of shape (N,).
DatasetArrays = tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike]

MAX_DATASETS: Final = kernels.MAX_DATASETS

_SUBSETS, _SUBSET_OFFSETS = kernels.subset_table(MAX_DATASETS)


class TriggerInputError(LensNetError, ValueError):
    """The trigger's input or rule is unusable; the message names the dataset or setting."""


_RULE_LIMITS = {
    "k": "k >= 1",
    "n": "n >= k",
    "n_sigma": "finite n_sigma >= 0",
    "average": "average >= 1",
    "dchi2_min": "finite dchi2_min >= 0",
    "baseline_part": "baseline_part >= 1",
}


def _check_rule(
    k: int, n: int, n_sigma: float, dchi2_min: float, average: int = 1, baseline_part: int = 1
) -> None:
    """Raise :class:`TriggerInputError` unless the (scalar) rule is usable."""
    for name, integer in (
        ("k", k),
        ("n", n),
        ("average", average),
        ("baseline_part", baseline_part),
    ):
        if isinstance(integer, bool) or not isinstance(integer, int | np.integer):
            raise TriggerInputError(f"{name}: expected an integer, got {integer!r}")
    for name, number in (("n_sigma", n_sigma), ("dchi2_min", dchi2_min)):
        if isinstance(number, bool) or not isinstance(
            number, int | float | np.integer | np.floating
        ):
            raise TriggerInputError(f"{name}: expected a number, got {number!r}")
    _check_rule_arrays(
        np.array([k]),
        np.array([n]),
        np.array([n_sigma], dtype=np.float64),
        np.array([dchi2_min], dtype=np.float64),
        np.array([average]),
        np.array([baseline_part]),
        per_star=False,
    )


def _check_rule_arrays(
    k: IntArray,
    n: IntArray,
    n_sigma: FloatArray,
    dchi2_min: FloatArray,
    average: IntArray,
    baseline_part: IntArray,
    *,
    per_star: bool = True,
) -> None:
    """Raise :class:`TriggerInputError` naming the first star whose rule is unusable (and the
    star, with ``per_star``)."""
    bad = {
        "k": (k < 1, k),
        "n": (n < k, n),
        "n_sigma": (~(np.isfinite(n_sigma) & (n_sigma >= 0)), n_sigma),
        "average": (average < 1, average),
        "dchi2_min": (~(np.isfinite(dchi2_min) & (dchi2_min >= 0)), dchi2_min),
        "baseline_part": (baseline_part < 1, baseline_part),
    }
    for name, (problem, values) in bad.items():
        if problem.any():
            star = int(np.argmax(problem))
            where = f" (star {star})" if per_star else ""
            raise TriggerInputError(
                f"{name}: expected {_RULE_LIMITS[name]}, got {values[star]}{where}"
            )


@dataclass(frozen=True, slots=True)
class TriggerRule:
    """Parameters of the trigger: ``k`` high points among the last ``n``, then ``dchi2_min``.

    ``n_sigma`` is the height above the median, in units of ``flux_err``, that makes a point
    high; with ``average > 1`` a point's height is that of the weighted mean of it and the
    ``average - 1`` points before it in its dataset; with ``baseline_part > 1`` the median is
    that of each dataset's oldest ``1 / baseline_part`` (module docstring, step 1). Use as
    ``evaluate(datasets, **dataclasses.asdict(rule))``.
    """

    k: int
    n: int
    n_sigma: float
    dchi2_min: float
    average: int = 1
    baseline_part: int = 1

    def __post_init__(self) -> None:
        _check_rule(self.k, self.n, self.n_sigma, self.dchi2_min, self.average, self.baseline_part)

    @property
    def span(self) -> int:
        """Latest points per dataset the rising test reads: ``n + average - 1``."""
        return self.n + self.average - 1

    @classmethod
    def parse(cls, text: str) -> TriggerRule:
        """The rule written ``"k/n@n_sigma:dchi2_min"``, e.g. ``"5/5@3:250"``, then optionally
        ``"~average"`` and ``"^baseline_part"``, e.g. ``"5/5@3:250~4^2"`` (the inverse of
        ``str(rule)``); :class:`TriggerInputError` names what is wrong."""
        counts, _, rest = text.strip().partition("@")
        sigma, _, rest = rest.partition(":")
        rest, caret, part = rest.partition("^")
        dchi2, tilde, average = rest.partition("~")
        k, _, n = counts.partition("/")
        try:
            numbers = (
                int(k),
                int(n),
                float(sigma),
                float(dchi2),
                int(average) if tilde else 1,
                int(part) if caret else 1,
            )
        except ValueError as error:
            raise TriggerInputError(
                f"trigger rule {text!r}: expected k/n@n_sigma:dchi2_min[~average][^part], "
                "e.g. 5/5@3:250 or 5/5@3:250~4^2"
            ) from error
        return cls(*numbers)

    def __str__(self) -> str:
        text = f"{self.k}/{self.n}@{self.n_sigma:g}:{self.dchi2_min:g}"
        text = text if self.average == 1 else f"{text}~{self.average}"
        return text if self.baseline_part == 1 else f"{text}^{self.baseline_part}"


#: Defaults of Kim et al. (2018) by field cadence; settings may override them per field.
HIGH_CADENCE: Final = TriggerRule(k=5, n=5, n_sigma=3.0, dchi2_min=250.0)
LOW_CADENCE: Final = TriggerRule(k=10, n=10, n_sigma=3.0, dchi2_min=400.0)


@dataclass(frozen=True, slots=True)
class TriggerResult:
    """The trigger's verdict on one star, for the reported combination of datasets.

    Attributes
    ----------
    triggered : the star triggers.
    passed_rising : the reported combination passes the rising test (steps 1-2).
    dchi2 : chi2_flat - chi2_broken of the reported combination (>= 0).
    datasets : indices into the input of the reported combination, ascending; ``()`` when the
        star has no points.
    t_break : break time in the input's time unit; NaN when no break gives a positive slope.
    slope : flux units per time unit; 0 when there is no break.
    n_high : high points among the last n of the reported combination.
    n_points : points in the reported combination.
    chi2_flat : chi2 of the per-dataset weighted means over the reported combination.
    intercepts : per input dataset: ``c_d`` of the line for datasets in the combination, the
        weighted mean flux for the others, NaN for empty datasets.
    baseline : per input dataset, the median flux (NaN for empty datasets).
    n_dropped : points dropped while cleaning (non-finite values or ``flux_err <= 0``).
    """

    triggered: bool
    passed_rising: bool
    dchi2: float
    datasets: tuple[int, ...]
    t_break: float
    slope: float
    n_high: int
    n_points: int
    chi2_flat: float
    intercepts: tuple[float, ...]
    baseline: tuple[float, ...]
    n_dropped: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class TriggerBatchResult:
    """The trigger's verdict on S stars (D datasets); per-star arrays have shape (S,).

    ``combination`` is a bitmask whose bit j is the star's j-th dataset (dataset
    ``star_offsets[s] + j``). Other fields as in :class:`TriggerResult`; ``intercepts`` and
    ``baseline`` have shape (D,).
    """

    triggered: BoolArray
    passed_rising: BoolArray
    dchi2: FloatArray
    combination: IntArray
    t_break: FloatArray
    slope: FloatArray
    n_high: IntArray
    n_points: IntArray
    chi2_flat: FloatArray
    intercepts: FloatArray
    baseline: FloatArray
    star_offsets: IntArray

    def __len__(self) -> int:
        return len(self.triggered)

    def star(self, index: int) -> TriggerResult:
        """The result of star ``index`` as a :class:`TriggerResult` (dataset indices local)."""
        d0 = int(self.star_offsets[index])
        d1 = int(self.star_offsets[index + 1])
        mask = int(self.combination[index])
        return TriggerResult(
            triggered=bool(self.triggered[index]),
            passed_rising=bool(self.passed_rising[index]),
            dchi2=float(self.dchi2[index]),
            datasets=tuple(j for j in range(d1 - d0) if (mask >> j) & 1),
            t_break=float(self.t_break[index]),
            slope=float(self.slope[index]),
            n_high=int(self.n_high[index]),
            n_points=int(self.n_points[index]),
            chi2_flat=float(self.chi2_flat[index]),
            intercepts=tuple(float(c) for c in self.intercepts[d0:d1]),
            baseline=tuple(float(b) for b in self.baseline[d0:d1]),
        )


@dataclass(frozen=True, slots=True, eq=False)
class RisingBatchResult:
    """Rising test (steps 1-2) of S stars; every array has shape (S,).

    ``n_high`` is the most high points among the last n of any combination holding at least n
    points (0 when none does) and ``combination`` the bitmask attaining it (fewer datasets, then
    the lower bitmask, on ties; 0 when none).
    """

    passed: BoolArray
    n_high: IntArray
    combination: IntArray


def evaluate(
    datasets: Sequence[DatasetArrays],
    *,
    k: int,
    n: int,
    n_sigma: float,
    dchi2_min: float,
    average: int = 1,
    baseline_part: int = 1,
) -> TriggerResult:
    """Run the trigger on one star.

    Parameters
    ----------
    datasets : sequence of ``(t, flux, flux_err)``, each column of shape (N_d,)
        One entry per site (and field); t in days, flux and flux_err in DIA flux units. Cleaned
        as the module docstring says (bad points dropped, sorted by time).
    k, n, n_sigma, dchi2_min, average, baseline_part : the rule, see :class:`TriggerRule`.

    Returns
    -------
    TriggerResult
    """
    _check_rule(k, n, n_sigma, dchi2_min, average, baseline_part)
    if len(datasets) > MAX_DATASETS:
        raise TriggerInputError(f"datasets: {len(datasets)} given, at most {MAX_DATASETS}")
    columns = [_clean(index, dataset) for index, dataset in enumerate(datasets)]
    n_dropped = sum(dropped for *_, dropped in columns)
    dataset_offsets = np.zeros(len(columns) + 1, dtype=np.int64)
    dataset_offsets[1:] = np.cumsum([len(t) for t, *_ in columns])
    batch = _evaluate_arrays(
        _concat([c[0] for c in columns]),
        _concat([c[1] for c in columns]),
        _concat([c[2] for c in columns]),
        dataset_offsets,
        np.array([0, len(columns)], dtype=np.int64),
        k=np.array([k], dtype=np.int64),
        n=np.array([n], dtype=np.int64),
        n_sigma=np.array([n_sigma], dtype=np.float64),
        dchi2_min=np.array([dchi2_min], dtype=np.float64),
        average=np.array([average], dtype=np.int64),
        baseline_part=np.array([baseline_part], dtype=np.int64),
    )
    return dataclasses.replace(batch.star(0), n_dropped=n_dropped)


def evaluate_batch(
    t: npt.ArrayLike,
    flux: npt.ArrayLike,
    flux_err: npt.ArrayLike,
    dataset_offsets: npt.ArrayLike,
    star_offsets: npt.ArrayLike,
    *,
    k: int | npt.ArrayLike,
    n: int | npt.ArrayLike,
    n_sigma: float | npt.ArrayLike,
    dchi2_min: float | npt.ArrayLike,
    average: int | npt.ArrayLike = 1,
    baseline_part: int | npt.ArrayLike = 1,
    check: bool = True,
) -> TriggerBatchResult:
    """Run the trigger on many stars in one compiled call.

    Parameters
    ----------
    t, flux, flux_err : (N,) float
        Points of all datasets of all stars, concatenated; clean and time-sorted per dataset.
    dataset_offsets : (D + 1,) int
        Dataset d is points ``dataset_offsets[d]:dataset_offsets[d + 1]``.
    star_offsets : (S + 1,) int
        Star s is datasets ``star_offsets[s]:star_offsets[s + 1]`` (at most MAX_DATASETS).
    k, n, n_sigma, dchi2_min, average, baseline_part : scalar or (S,)
        The rule, per star when arrays (fields differ in cadence).
    check : verify the points are finite, ``flux_err > 0`` and sorted (O(N) numpy).

    Returns
    -------
    TriggerBatchResult
    """
    t_, flux_, flux_err_, dataset_offsets_, star_offsets_ = _batch_arrays(
        t, flux, flux_err, dataset_offsets, star_offsets, check=check
    )
    n_stars = len(star_offsets_) - 1
    k_, n_, n_sigma_, dchi2_min_, average_, part_ = _per_star_rule(
        k, n, n_sigma, dchi2_min, average, baseline_part, n_stars
    )
    return _evaluate_arrays(
        t_,
        flux_,
        flux_err_,
        dataset_offsets_,
        star_offsets_,
        k=k_,
        n=n_,
        n_sigma=n_sigma_,
        dchi2_min=dchi2_min_,
        average=average_,
        baseline_part=part_,
    )


def rising_batch(
    t: npt.ArrayLike,
    flux: npt.ArrayLike,
    flux_err: npt.ArrayLike,
    dataset_offsets: npt.ArrayLike,
    star_offsets: npt.ArrayLike,
    *,
    k: int | npt.ArrayLike,
    n: int | npt.ArrayLike,
    n_sigma: float | npt.ArrayLike,
    average: int | npt.ArrayLike = 1,
    baseline_part: int | npt.ArrayLike = 1,
    baseline: npt.ArrayLike | None = None,
    check: bool = True,
) -> RisingBatchResult:
    """Rising test only (steps 1-2) of many stars in one compiled call.

    The daemon runs this on every updated star and :func:`evaluate_batch` on those that pass;
    ``passed`` equals ``evaluate_batch(...).passed_rising`` on the same input.

    Parameters
    ----------
    t, flux, flux_err, dataset_offsets, star_offsets, check : as in :func:`evaluate_batch`.
    k, n, n_sigma, average, baseline_part : scalar or (S,), the rule.
    baseline : (D,) float, optional
        Baseline flux of each dataset (the median of its oldest ``1 / baseline_part``), e.g.
        ``TriggerBatchResult.baseline`` cached from an earlier evaluation. Computing the
        medians is most of the cost of this test; a cached value that is not the median of the
        current points gives the rule with that baseline instead.

    Returns
    -------
    RisingBatchResult
    """
    t_, flux_, flux_err_, dataset_offsets_, star_offsets_ = _batch_arrays(
        t, flux, flux_err, dataset_offsets, star_offsets, check=check
    )
    n_stars = len(star_offsets_) - 1
    k_, n_, n_sigma_, _, average_, part_ = _per_star_rule(
        k, n, n_sigma, 0.0, average, baseline_part, n_stars
    )
    if baseline is None:
        baseline_ = np.empty(0, dtype=np.float64)
    else:
        baseline_ = _float_column("baseline", baseline)
        if len(baseline_) != len(dataset_offsets_) - 1:
            raise TriggerInputError(
                f"baseline: length {len(baseline_)}, expected one per dataset "
                f"({len(dataset_offsets_) - 1})"
            )
        if check:
            nonempty = np.diff(dataset_offsets_) > 0
            bad = np.flatnonzero(nonempty & ~np.isfinite(baseline_))
            if bad.size:
                raise TriggerInputError(f"baseline: dataset {bad[0]} is not finite")
    return rising_arrays(
        t_,
        flux_,
        flux_err_,
        dataset_offsets_,
        star_offsets_,
        k_,
        n_,
        n_sigma_,
        average_,
        baseline_,
        part_,
    )


def rising_arrays(
    t: FloatArray,
    flux: FloatArray,
    flux_err: FloatArray,
    dataset_offsets: IntArray,
    star_offsets: IntArray,
    k: IntArray,
    n: IntArray,
    n_sigma: FloatArray,
    average: IntArray,
    baseline: FloatArray,
    baseline_part: IntArray | None = None,
) -> RisingBatchResult:
    """:func:`rising_batch` on input its caller built itself, checked by nothing: contiguous
    float64 points, int64 offsets of a consistent layout, (S,) int64 / float64 valid rules,
    (D,) baselines (or an empty array). For the daemon's own kernels' output, where the
    checks would cost more than the test (the kernels do not bounds-check). ``baseline_part``
    (S,) int64 is read only when ``baseline`` is empty (default: 1 for every star)."""
    if baseline_part is None:
        baseline_part = np.ones(len(star_offsets) - 1, dtype=np.int64)
    passed, n_high, combination = kernels.rising_stars(
        t,
        flux,
        flux_err,
        dataset_offsets,
        star_offsets,
        k,
        n,
        n_sigma,
        average,
        baseline_part,
        baseline,
        _SUBSETS,
        _SUBSET_OFFSETS,
    )
    return RisingBatchResult(passed=passed, n_high=n_high, combination=combination)


def dataset_medians(flux: npt.ArrayLike, dataset_offsets: npt.ArrayLike) -> FloatArray:
    """(D,) median flux of each dataset of CSR input (NaN for an empty one): the ``baseline``
    that :func:`rising_batch` accepts, in one compiled call."""
    flux_ = _float_column("flux", flux)
    offsets = _offsets("dataset_offsets", dataset_offsets, len(flux_), "points")
    return kernels.dataset_medians(flux_, offsets)


def fitted_line(datasets: Sequence[DatasetArrays], result: TriggerResult) -> list[FloatArray]:
    """The reported broken line evaluated at every input point of every dataset.

    Parameters
    ----------
    datasets : the ``(t, flux, flux_err)`` given to :func:`evaluate` (only ``t`` is read).
    result : what :func:`evaluate` returned for them.

    Returns
    -------
    list of (N_d,) float64, one per dataset, in input order (not sorted); flux units. NaN at
    points with a NaN time and for datasets that had no valid point.
    """
    if len(datasets) != len(result.intercepts):
        raise TriggerInputError(
            f"datasets: {len(datasets)} given, the result has {len(result.intercepts)}"
        )
    in_combination = set(result.datasets)
    lines = []
    for index, dataset in enumerate(datasets):
        t = _float_column(f"dataset {index} t", dataset[0])
        lines.append(
            broken_line(
                t,
                np.full(t.shape, result.intercepts[index]),
                np.full(t.shape, index in in_combination),
                np.full(t.shape, result.slope),
                np.full(t.shape, result.t_break),
            )
        )
    return lines


def broken_line(
    t: FloatArray,
    intercept: FloatArray,
    in_combination: BoolArray,
    slope: FloatArray,
    t_break: FloatArray,
) -> FloatArray:
    """``c + slope * max(0, t - t_break)`` where in the combination and a break exists, else c.

    Every argument has shape (N,).
    """
    rises = in_combination & np.isfinite(t_break)
    lever = np.where(rises, np.maximum(0.0, t - np.where(rises, t_break, 0.0)), 0.0)
    # A NaN time stays NaN rather than silently taking the intercept.
    lever = np.where(np.isnan(t), np.nan, lever)
    return np.asarray(intercept + slope * lever, dtype=np.float64)


def evaluate_arrays(
    t: FloatArray,
    flux: FloatArray,
    flux_err: FloatArray,
    dataset_offsets: IntArray,
    star_offsets: IntArray,
    *,
    k: IntArray,
    n: IntArray,
    n_sigma: FloatArray,
    dchi2_min: FloatArray,
    average: IntArray,
    baseline_part: IntArray,
) -> TriggerBatchResult:
    """:func:`evaluate_batch` on input its caller built itself, checked by nothing (as
    :func:`rising_arrays`; ``dchi2_min`` (S,) float64)."""
    return _evaluate_arrays(
        t,
        flux,
        flux_err,
        dataset_offsets,
        star_offsets,
        k=k,
        n=n,
        n_sigma=n_sigma,
        dchi2_min=dchi2_min,
        average=average,
        baseline_part=baseline_part,
    )


def _evaluate_arrays(
    t: FloatArray,
    flux: FloatArray,
    flux_err: FloatArray,
    dataset_offsets: IntArray,
    star_offsets: IntArray,
    *,
    k: IntArray,
    n: IntArray,
    n_sigma: FloatArray,
    dchi2_min: FloatArray,
    average: IntArray,
    baseline_part: IntArray,
) -> TriggerBatchResult:
    (
        triggered,
        passed_rising,
        dchi2,
        chi2_flat,
        combination,
        break_index,
        slope,
        n_high,
        n_points,
        intercepts,
        baseline,
    ) = kernels.evaluate_stars(
        t,
        flux,
        flux_err,
        dataset_offsets,
        star_offsets,
        k,
        n,
        n_sigma,
        average,
        dchi2_min,
        baseline_part,
        _SUBSETS,
        _SUBSET_OFFSETS,
    )
    # Read t_break from the input rather than undoing the kernel's centring, so it is exact.
    t_break = np.where(break_index >= 0, t[np.maximum(break_index, 0)] if t.size else 0.0, np.nan)
    return TriggerBatchResult(
        triggered=triggered,
        passed_rising=passed_rising,
        dchi2=dchi2,
        combination=combination,
        t_break=t_break,
        slope=slope,
        n_high=n_high,
        n_points=n_points,
        chi2_flat=chi2_flat,
        intercepts=intercepts,
        baseline=baseline,
        star_offsets=star_offsets,
    )


def _per_star(name: str, value: object, n_stars: int, *, integer: bool) -> npt.NDArray[Any]:
    """A scalar or (S,) rule parameter as a contiguous (S,) int64 or float64 array."""
    array = np.asarray(value)
    if array.ndim > 1 or (array.ndim == 1 and len(array) != n_stars):
        raise TriggerInputError(f"{name}: expected a scalar or {n_stars} values, got {array.shape}")
    if array.dtype.kind not in ("iu" if integer else "iuf"):
        kind = "integers" if integer else "numbers"
        raise TriggerInputError(f"{name}: expected {kind}, got dtype {array.dtype}")
    dtype = np.int64 if integer else np.float64
    return np.ascontiguousarray(np.broadcast_to(array, (n_stars,)), dtype=dtype)


def _per_star_rule(
    k: object,
    n: object,
    n_sigma: object,
    dchi2_min: object,
    average: object,
    baseline_part: object,
    n_stars: int,
) -> tuple[IntArray, IntArray, FloatArray, FloatArray, IntArray, IntArray]:
    k_: IntArray = _per_star("k", k, n_stars, integer=True)
    n_: IntArray = _per_star("n", n, n_stars, integer=True)
    n_sigma_: FloatArray = _per_star("n_sigma", n_sigma, n_stars, integer=False)
    dchi2_min_: FloatArray = _per_star("dchi2_min", dchi2_min, n_stars, integer=False)
    average_: IntArray = _per_star("average", average, n_stars, integer=True)
    part_: IntArray = _per_star("baseline_part", baseline_part, n_stars, integer=True)
    _check_rule_arrays(k_, n_, n_sigma_, dchi2_min_, average_, part_)
    return k_, n_, n_sigma_, dchi2_min_, average_, part_


def _float_column(name: str, values: npt.ArrayLike) -> FloatArray:
    """``values`` as a contiguous 1-D float64 array, or :class:`TriggerInputError`."""
    try:
        array = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TriggerInputError(f"{name}: not numbers ({error})") from None
    if array.ndim != 1:
        raise TriggerInputError(f"{name}: expected a 1-D array, got shape {array.shape}")
    return array


def _clean(index: int, dataset: DatasetArrays) -> tuple[FloatArray, FloatArray, FloatArray, int]:
    """One dataset's columns with bad points dropped and sorted by time; plus the drop count."""
    if len(dataset) != 3:
        raise TriggerInputError(
            f"dataset {index}: expected (t, flux, flux_err), got {len(dataset)} columns"
        )
    t, flux, flux_err = (
        _float_column(f"dataset {index} {name}", column)
        for name, column in zip(("t", "flux", "flux_err"), dataset, strict=True)
    )
    if not len(t) == len(flux) == len(flux_err):
        raise TriggerInputError(
            f"dataset {index}: t, flux, flux_err lengths differ ({len(t)}, {len(flux)}, "
            f"{len(flux_err)})"
        )
    good = np.isfinite(t) & np.isfinite(flux) & np.isfinite(flux_err) & (flux_err > 0)
    n_dropped = len(t) - int(np.count_nonzero(good))
    if n_dropped:
        t, flux, flux_err = t[good], flux[good], flux_err[good]
    if np.any(t[1:] < t[:-1]):
        order = np.argsort(t, kind="stable")
        t, flux, flux_err = t[order], flux[order], flux_err[order]
    return t, flux, flux_err, n_dropped


def _concat(columns: list[FloatArray]) -> FloatArray:
    return np.concatenate(columns) if columns else np.empty(0, dtype=np.float64)


def _batch_arrays(
    t: npt.ArrayLike,
    flux: npt.ArrayLike,
    flux_err: npt.ArrayLike,
    dataset_offsets: npt.ArrayLike,
    star_offsets: npt.ArrayLike,
    *,
    check: bool,
) -> tuple[FloatArray, FloatArray, FloatArray, IntArray, IntArray]:
    """Batch input as contiguous kernel arrays; layout always checked, values when ``check``."""
    t_ = _float_column("t", t)
    flux_ = _float_column("flux", flux)
    flux_err_ = _float_column("flux_err", flux_err)
    if not len(t_) == len(flux_) == len(flux_err_):
        raise TriggerInputError(
            f"t, flux, flux_err lengths differ ({len(t_)}, {len(flux_)}, {len(flux_err_)})"
        )
    dataset_offsets_ = _offsets("dataset_offsets", dataset_offsets, len(t_), "points")
    star_offsets_ = _offsets("star_offsets", star_offsets, len(dataset_offsets_) - 1, "datasets")
    datasets_per_star = np.diff(star_offsets_)
    if datasets_per_star.size and datasets_per_star.max() > MAX_DATASETS:
        star = int(np.argmax(datasets_per_star))
        raise TriggerInputError(
            f"star_offsets: star {star} has {datasets_per_star[star]} datasets, "
            f"at most {MAX_DATASETS}"
        )
    if check:
        bad = ~(np.isfinite(t_) & np.isfinite(flux_) & np.isfinite(flux_err_) & (flux_err_ > 0))
        if bad.any():
            point = int(np.argmax(bad))
            dataset = int(np.searchsorted(dataset_offsets_, point, side="right") - 1)
            raise TriggerInputError(
                f"dataset {dataset}: point {point} is not finite or has flux_err <= 0 "
                "(clean before the batch call)"
            )
        starts = np.zeros(len(t_) + 1, dtype=np.bool_)
        starts[dataset_offsets_] = True
        unsorted = (np.diff(t_) < 0) & ~starts[1:-1]
        if unsorted.any():
            point = int(np.argmax(unsorted)) + 1
            dataset = int(np.searchsorted(dataset_offsets_, point, side="right") - 1)
            raise TriggerInputError(
                f"dataset {dataset}: times not sorted at point {point} (sort before the batch call)"
            )
    return t_, flux_, flux_err_, dataset_offsets_, star_offsets_


def _offsets(name: str, values: npt.ArrayLike, total: int, unit: str) -> IntArray:
    """Offsets as a contiguous int64 array from 0 to ``total``, non-decreasing."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "iu":
        raise TriggerInputError(f"{name}: expected a 1-D integer array of length >= 1")
    array = np.ascontiguousarray(array, dtype=np.int64)
    if array[0] != 0 or array[-1] != total or np.any(np.diff(array) < 0):
        raise TriggerInputError(
            f"{name}: expected non-decreasing offsets from 0 to {total} {unit}, "
            f"got {array[0]} .. {array[-1]}"
        )
    return array
