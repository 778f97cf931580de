"""LensNet preprocessing shared by training, offline ``classify`` and the daemon.

One star (:class:`consumer.seasons.archive.Star`) becomes one :class:`Candidate`: per-site arrays of
raw (unstandardised) features, ready for :class:`model.lensnet.LensNet`, which standardises
inside. The steps, in order (paper §5.2 and §5.4; choices where the paper is silent say why):

1. **Cleaning**, per dataset. Dropped: points with ``flux_err <= 0`` (the paper drops negative
   errors; a zero error carries infinite weight in the AlertFinder fit, so it goes too), PSF
   quality outside 0-100, FWHM < 0, and any NaN among the columns present. A column entirely
   NaN in a dataset (a ``.pysis`` file has no PSF quality; 5-column files have no sky, FWHM or
   airmass) is *missing*: it does not drop points, is kept as NaN and becomes 0 (the training
   mean) after standardisation inside the model.
2. **I band only** (V frames are 1 in ~10 and on another flux scale), and only points with
   ``hjd <= as_of`` (and ``hjd >= start`` when a left crop is given).
3. **One dataset per site**: stars in overlapping fields have two datasets per site; the one
   with the most valid points is kept (ties: the lower field number), so each LSTM branch sees
   one photometric system.
4. **Length cap**: the most recent :data:`MAX_LENGTH` = 1500 points per site (paper §5.2).
5. **Outliers** (paper §5.4, kept conservative so that short planetary anomalies survive): a
   point is removed when its flux deviates from the median of its 2 x :data:`OUTLIER_HALF_WINDOW`
   neighbours by more than :data:`OUTLIER_N_MAD` scaled MADs of the site's residuals *and*
   neither adjacent point deviates in the same direction by more than half that; i.e. isolated
   single-point spikes only. The first and last point of a site are never removed (the last
   point is the alert itself). Other features are not outlier-filtered: their bad values are
   caught by the range rules of step 1.
6. **Minimum data**: at least :data:`MIN_POINTS` = 10 valid points in at least one site, else
   :class:`InsufficientDataError` (the caller reports why; nothing is silently skipped).
7. **AlertFinder**: :func:`consumer.alertfinder.api.evaluate` on the per-site series (rule from a
   :class:`~consumer.alertfinder.api.TriggerRule`, default ``HIGH_CADENCE``), then
   :func:`~consumer.alertfinder.api.fitted_line` gives the ``fitted`` feature (historic mean before
   ``t_break``, the rising line after): the one implementation shared by training and serving.
8. **Scaling** (paper silent; needed because DIA flux scales differ by orders of magnitude
   between stars): ``flux`` and ``fitted`` are taken relative to the site's median flux (the
   AlertFinder ``baseline``) and, with ``flux_err``, divided by the star's median ``flux_err``
   over its kept points, so they are in units of the star's typical error; ``flux`` and
   ``fitted`` then go through ``arcsinh`` (linear within a few errors, logarithmic for bright
   peaks), so that noise-level structure and a 1000-sigma peak both stay visible to the LSTM
   after standardisation. ``time`` is days relative to the last observation over all sites
   (<= 0, paper §5.4).
9. **Padding**: each site's points come first and zeros after them (the paper pads on the left;
   see :mod:`model.lensnet` for why not here), in an array of shape (3, L, 8), with ``L`` the
   longest site; ``lengths`` says how many steps are real.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numba
import numpy as np
import numpy.typing as npt

from consumer.alertfinder.api import HIGH_CADENCE, TriggerResult, TriggerRule, evaluate, fitted_line
from consumer.constants import SITES
from consumer.exceptions import LensNetError
from consumer.seasons.archive import Dataset, Star

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

#: Feature order of the last axis of ``Candidate.x`` (and of the model's ``mean``/``std``).
FEATURES: Final = ("time", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality", "fitted")
N_FEATURES: Final = len(FEATURES)
N_SITES: Final = len(SITES)
#: Most recent points kept per site (paper §5.2).
MAX_LENGTH: Final = 1500
#: A candidate needs this many valid points in at least one site (paper §5.2).
MIN_POINTS: Final = 10
OUTLIER_HALF_WINDOW: Final = 5
OUTLIER_N_MAD: Final = 6.0
_I_BAND: Final = 0
_OPTIONAL = ("sky", "fwhm", "airmass", "psf_quality")


class InsufficientDataError(LensNetError, ValueError):
    """A star has fewer than :data:`MIN_POINTS` valid I-band points in every site."""


@dataclass(frozen=True, eq=False)
class SiteSeries:
    """One site's cleaned I-band series; arrays of shape (N,), time-sorted, full HJD."""

    site: str
    field: int
    hjd: F64
    flux: F64
    flux_err: F64
    sky: F64
    fwhm: F64
    airmass: F64
    psf_quality: F64

    def __len__(self) -> int:
        return len(self.hjd)


@dataclass(frozen=True, eq=False)
class Candidate:
    """One star prepared for LensNet.

    Attributes
    ----------
    x : (S=3, L, F=8) float32, raw features in :data:`FEATURES` order; site ``s`` holds its
        ``lengths[s]`` real steps first, zeros after.
    lengths : (3,) int64, real steps per site (0 for a site without data).
    trigger : the AlertFinder result on the three per-site series (dataset index = site index
        in ``SITES`` order; an absent site is an empty dataset).
    fields : (3,) field number used per site, -1 where absent.
    t_last : full HJD of the last kept observation over all sites.
    flux_scale : the star's median flux_err (flux units) that flux features were divided by.
    n_removed : points removed by cleaning and outlier rejection (all sites): the sum of
        ``dropped["cleaning"]`` and ``dropped["outliers"]``.
    dropped : I-band points up to ``as_of`` that LensNet does not see, by reason: ``cleaning``
        (step 1, in the datasets used), ``other_datasets`` (step 3: every point of a site's
        datasets but the one kept), ``beyond_cap`` (step 4: older than the most recent
        ``max_length``), ``outliers`` (step 5).
    """

    x: F32
    lengths: I64
    trigger: TriggerResult
    fields: tuple[int, int, int]
    t_last: float
    flux_scale: float
    n_removed: int
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Per site, the series the features were made from (physical units) and the fitted broken
    #: line at its points; None / empty where a site has no data. For alerts and plots.
    series: tuple[SiteSeries | None, ...] = ()
    lines: tuple[F64, ...] = ()


def valid_mask(dataset: Dataset) -> B:
    """(N,) bool: the points of ``dataset`` that survive the cleaning rules (step 1)."""
    keep = np.isfinite(dataset.hjd) & np.isfinite(dataset.flux) & np.isfinite(dataset.flux_err)
    keep &= dataset.flux_err > 0
    for name in _OPTIONAL:
        column = np.asarray(getattr(dataset, name), dtype=np.float64)
        present = np.isfinite(column)
        if not present.any():
            continue  # a missing column: kept as NaN, never drops points
        keep &= present
    with np.errstate(invalid="ignore"):
        quality = np.asarray(dataset.psf_quality, dtype=np.float64)
        keep &= ~((quality < 0) | (quality > 100))
        keep &= ~(np.asarray(dataset.fwhm, dtype=np.float64) < 0)
    return keep


def _series(dataset: Dataset, keep: B) -> SiteSeries:
    def column(name: str) -> F64:
        values = np.asarray(getattr(dataset, name), dtype=np.float64)[keep]
        if not np.isfinite(values).any():
            values = np.full(values.shape, np.nan)
        return values

    return SiteSeries(
        site=dataset.site,
        field=dataset.field,
        hjd=column("hjd"),
        flux=column("flux"),
        flux_err=column("flux_err"),
        sky=column("sky"),
        fwhm=column("fwhm"),
        airmass=column("airmass"),
        psf_quality=column("psf_quality"),
    )


def select_sites(
    star: Star, *, as_of: float = np.inf, start: float = -np.inf, max_length: int = MAX_LENGTH
) -> list[SiteSeries | None]:
    """Steps 1-4: one cleaned, cropped I-band series per site (``SITES`` order), None if none.

    Parameters
    ----------
    star : the star and all its datasets.
    as_of, start : full HJD; keep points with ``start <= hjd <= as_of``.
    max_length : most recent points kept per site.
    """
    out: list[SiteSeries | None] = []
    for chosen in _choose_datasets(star, as_of=as_of, start=start):
        if chosen is None:
            out.append(None)
            continue
        series = _series(*chosen)
        if len(series) > max_length:
            series = _slice(series, slice(len(series) - max_length, None))
        out.append(series)
    return out


def _choose_datasets(star: Star, *, as_of: float, start: float) -> list[tuple[Dataset, B] | None]:
    """Per site (``SITES`` order), the dataset kept by step 3 and its valid in-window I-band
    points (steps 1-2), None where the site has none."""
    best: list[tuple[int, int, Dataset, B] | None] = [None] * N_SITES
    for dataset in star.datasets:
        if dataset.site not in SITES:
            continue
        keep = valid_mask(dataset) & (dataset.band == _I_BAND)
        keep &= (dataset.hjd <= as_of) & (dataset.hjd >= start)
        n = int(keep.sum())
        if n == 0:
            continue
        site = SITES.index(dataset.site)
        rank = (n, -dataset.field)
        current = best[site]
        if current is None or rank > (current[0], current[1]):
            best[site] = (n, -dataset.field, dataset, keep)
    return [None if entry is None else (entry[2], entry[3]) for entry in best]


def _dropped_before_outliers(
    star: Star, *, as_of: float, start: float, max_length: int
) -> dict[str, int]:
    """Points of steps 1, 3 and 4 (see :attr:`Candidate.dropped`)."""
    in_window = {
        id(d): int(((d.band == _I_BAND) & (d.hjd <= as_of) & (d.hjd >= start)).sum())
        for d in star.datasets
    }
    chosen = [c for c in _choose_datasets(star, as_of=as_of, start=start) if c is not None]
    used = {id(dataset) for dataset, _ in chosen}
    valid = [int(keep.sum()) for _, keep in chosen]
    return {
        "cleaning": sum(in_window[id(d)] for d, _ in chosen) - sum(valid),
        "other_datasets": sum(n for key, n in in_window.items() if key not in used),
        "beyond_cap": sum(max(0, n - max_length) for n in valid),
    }


def _slice(series: SiteSeries, index: slice | B) -> SiteSeries:
    return dataclasses.replace(
        series,
        **{
            name: getattr(series, name)[index]
            for name in ("hjd", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality")
        },
    )


def outlier_mask(
    flux: F64, *, half_window: int = OUTLIER_HALF_WINDOW, n_mad: float = OUTLIER_N_MAD
) -> B:
    """(N,) bool, True for isolated single-point flux spikes (step 5).

    Parameters
    ----------
    flux : (N,) time-sorted fluxes of one site.
    half_window : neighbours on each side for the running median (the point itself excluded;
        fewer near the ends).
    n_mad : threshold in scaled MADs (1.4826 x MAD) of the residuals from the running median.
    """
    flux = np.ascontiguousarray(flux, dtype=np.float64)
    if len(flux) < 2 * half_window + 1:
        return np.zeros(len(flux), dtype=bool)
    return np.asarray(_outlier_mask(flux, half_window, n_mad), dtype=bool)


@numba.njit(cache=True)
def _outlier_mask(flux: F64, half_window: int, n_mad: float) -> B:  # pragma: no cover - numba
    n = len(flux)
    out = np.zeros(n, dtype=np.bool_)
    residual = np.empty(n)
    buffer = np.empty(2 * half_window)
    for i in range(n):
        m = 0  # insertion sort of the neighbours into buffer[:m]
        for j in range(max(0, i - half_window), min(n, i + half_window + 1)):
            if j == i:
                continue
            value = flux[j]
            k = m
            while k > 0 and buffer[k - 1] > value:
                buffer[k] = buffer[k - 1]
                k -= 1
            buffer[k] = value
            m += 1
        middle = buffer[m // 2] if m % 2 else 0.5 * (buffer[m // 2 - 1] + buffer[m // 2])
        residual[i] = flux[i] - middle
    centre = np.median(residual)
    scale = 1.4826 * np.median(np.abs(residual - centre))
    if not scale > 0:
        return out
    z = residual / scale
    half = n_mad / 2
    for i in range(1, n - 1):
        if abs(z[i]) <= n_mad:
            continue
        sign = np.sign(z[i])
        prev_same = np.sign(z[i - 1]) == sign and abs(z[i - 1]) > half
        next_same = np.sign(z[i + 1]) == sign and abs(z[i + 1]) > half
        out[i] = not prev_same and not next_same
    return out


def prepare(
    star: Star,
    *,
    as_of: float = np.inf,
    start: float = -np.inf,
    rule: TriggerRule = HIGH_CADENCE,
    max_length: int = MAX_LENGTH,
) -> Candidate:
    """Steps 1-9: the star as LensNet input, as seen at ``as_of`` (full HJD).

    Raises
    ------
    InsufficientDataError
        No site has :data:`MIN_POINTS` valid points (the message says how many each has).
    """
    sites = select_sites(star, as_of=as_of, start=start, max_length=max_length)
    dropped = _dropped_before_outliers(star, as_of=as_of, start=start, max_length=max_length)
    cleaned: list[SiteSeries | None] = []
    for series in sites:
        if series is None:
            cleaned.append(None)
            continue
        cleaned.append(_slice(series, ~outlier_mask(series.flux)))
    counts = [0 if s is None else len(s) for s in cleaned]
    dropped["outliers"] = sum(len(s) for s in sites if s is not None) - sum(counts)
    if max(counts) < MIN_POINTS:
        detail = ", ".join(f"{site} {count}" for site, count in zip(SITES, counts, strict=True))
        raise InsufficientDataError(
            f"star {star.name}: fewer than {MIN_POINTS} valid I-band points in every site "
            f"({detail})"
        )
    empty = np.zeros(0)
    columns = [(empty, empty, empty) if s is None else (s.hjd, s.flux, s.flux_err) for s in cleaned]
    trigger = evaluate(columns, **dataclasses.asdict(rule))
    lines = fitted_line(columns, trigger)
    present = [s for s in cleaned if s is not None and len(s)]
    t_last = max(float(s.hjd[-1]) for s in present)
    flux_scale = float(np.median(np.concatenate([s.flux_err for s in present])))
    length = max(counts)
    x = np.zeros((N_SITES, length, N_FEATURES), dtype=np.float32)
    for site, series in enumerate(cleaned):
        if series is None or len(series) == 0:
            continue
        baseline = trigger.baseline[site]
        features = np.stack(
            [
                series.hjd - t_last,
                np.arcsinh((series.flux - baseline) / flux_scale),
                series.flux_err / flux_scale,
                series.sky,
                series.fwhm,
                series.airmass,
                series.psf_quality,
                np.arcsinh((lines[site] - baseline) / flux_scale),
            ],
            axis=1,
        )
        x[site, : len(series)] = features
    fields = tuple(-1 if s is None else s.field for s in cleaned)
    return Candidate(
        x=x,
        lengths=np.asarray(counts, dtype=np.int64),
        trigger=trigger,
        fields=(fields[0], fields[1], fields[2]),
        t_last=t_last,
        flux_scale=flux_scale,
        n_removed=dropped["cleaning"] + dropped["outliers"],
        dropped=dropped,
        series=tuple(cleaned),
        lines=tuple(lines),
    )


def collate(
    candidates: Sequence[Candidate] | Sequence[tuple[F32, I64]], max_length: int = MAX_LENGTH
) -> tuple[F32, I64]:
    """Stack candidates into a batch.

    Parameters
    ----------
    candidates : :class:`Candidate` objects or ``(x, lengths)`` pairs, x of shape (3, L_i, F)
        holding site ``s``'s ``lengths[s]`` real steps first.
    max_length : cap on the batch length (a site's older steps beyond it are cut).

    Returns
    -------
    x : (B, 3, L, F) float32 with L = min(max_length, max L_i); each site's real steps first,
        zeros after (a star's rows are the same whatever else is in the batch).
    lengths : (B, 3) int64, capped at L.
    """
    pairs = [(c.x, c.lengths) if isinstance(c, Candidate) else c for c in candidates]
    length = min(max_length, max((int(x.shape[1]) for x, _ in pairs), default=0))
    batch = np.zeros((len(pairs), N_SITES, length, N_FEATURES), dtype=np.float32)
    lengths = np.zeros((len(pairs), N_SITES), dtype=np.int64)
    for i, (x, n) in enumerate(pairs):
        for s in range(N_SITES):
            real = int(n[s])
            take = min(real, length)
            if take:
                batch[i, s, :take] = x[s, real - take : real]
            lengths[i, s] = take
    return batch, lengths
