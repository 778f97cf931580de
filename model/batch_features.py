"""LensNet preprocessing of many stars at once: :func:`model.features.prepare`, bit for bit.

:func:`prepare_batch` takes the stars as one :class:`DatasetTable` (every dataset's columns
concatenated, CSR-like) and gives, per star, the :class:`~model.features.Candidate` that
``prepare(star, as_of=..., start=..., rule=..., max_length=...)`` gives, or the
:class:`~model.features.InsufficientDataError` it raises. The steps are the same (see
:mod:`model.features`), in three passes over all the stars instead of ~40 numpy calls per star:

1. one compiled pass (:func:`_clean_select`) for steps 1-5: cleaning, I band and time window,
   the dataset kept per site, the length cap and the outlier filter (the same compiled
   :func:`model.features._outlier_mask`), writing each star's series site by site into shared
   arrays;
2. one compiled AlertFinder call for every star's three series
   (:func:`~consumer.alertfinder.api.evaluate_batch`, the kernel :func:`evaluate` runs per star;
   a star's result does not depend on the others);
3. numpy over the shared arrays for the fitted line and the features (element-wise operations,
   so each value is computed exactly as for one star), and per star its median flux error and
   the padded ``x``.

Stars whose kept series are not time-sorted (an archive may hold unsorted files; the daemon's
buffers never are) go through :func:`~model.features.prepare` itself, which sorts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numba
import numpy as np
import numpy.typing as npt

from consumer.alertfinder.api import TriggerRule, broken_line, dataset_medians, evaluate_arrays
from consumer.constants import SITES
from consumer.seasons.archive import Dataset, Star
from model.features import (
    MAX_LENGTH,
    MIN_POINTS,
    N_FEATURES,
    N_SITES,
    OUTLIER_HALF_WINDOW,
    OUTLIER_N_MAD,
    Candidate,
    InsufficientDataError,
    SiteSeries,
    _outlier_mask,
    prepare,
)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: The series columns the first pass writes, in order.
SERIES_COLUMNS: Final = ("hjd", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality")
#: The first pass's count of points LensNet does not see, by reason
#: (:attr:`model.features.Candidate.dropped`, in its order).
DROPPED_REASONS: Final = ("cleaning", "other_datasets", "beyond_cap", "outliers")
_CLEANING, _OTHER_DATASETS, _BEYOND_CAP, _OUTLIERS = range(len(DROPPED_REASONS))


@dataclass(frozen=True, eq=False)
class DatasetTable:
    """Datasets of S stars as shared columns: star s is datasets ``star_offsets[s]:star_offsets
    [s + 1]``, dataset d points ``dataset_offsets[d]:dataset_offsets[d + 1]`` (the columns and
    dtypes of :class:`~consumer.seasons.archive.Dataset`, NaN where missing)."""

    names: tuple[str, ...]  # (S,) star names, for error messages
    star_offsets: I64  # (S + 1,)
    dataset_site: I64  # (D,) index into SITES
    dataset_field: I64  # (D,)
    dataset_offsets: I64  # (D + 1,)
    hjd: F64  # (N,)
    flux: F64
    flux_err: F64
    sky: F32
    fwhm: F32
    airmass: F32
    psf_quality: F32
    band: npt.NDArray[np.uint8]

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_stars(cls, stars: Sequence[Star]) -> DatasetTable:
        """The table of ``stars``' datasets, in order."""
        datasets = [d for star in stars for d in star.datasets]
        per_star = [len(star.datasets) for star in stars]
        lengths = [len(d) for d in datasets]

        def column(name: str, dtype: type) -> npt.NDArray[np.generic]:
            parts: list[npt.NDArray[np.generic]] = [
                np.asarray(getattr(d, name), dtype=dtype) for d in datasets
            ]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        return cls(
            names=tuple(star.name for star in stars),
            star_offsets=np.concatenate([[0], np.cumsum(per_star)]).astype(np.int64),
            dataset_site=np.array([SITES.index(d.site) for d in datasets], dtype=np.int64),
            dataset_field=np.array([d.field for d in datasets], dtype=np.int64),
            dataset_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            hjd=column("hjd", np.float64),  # type: ignore[arg-type]
            flux=column("flux", np.float64),  # type: ignore[arg-type]
            flux_err=column("flux_err", np.float64),  # type: ignore[arg-type]
            sky=column("sky", np.float32),  # type: ignore[arg-type]
            fwhm=column("fwhm", np.float32),  # type: ignore[arg-type]
            airmass=column("airmass", np.float32),  # type: ignore[arg-type]
            psf_quality=column("psf_quality", np.float32),  # type: ignore[arg-type]
            band=column("band", np.uint8),  # type: ignore[arg-type]
        )

    def star(self, index: int) -> Star:
        """Star ``index`` as an archive :class:`~consumer.seasons.archive.Star` (position
        unknown), for :func:`~model.features.prepare`."""
        datasets = []
        for d in range(int(self.star_offsets[index]), int(self.star_offsets[index + 1])):
            rows = slice(int(self.dataset_offsets[d]), int(self.dataset_offsets[d + 1]))
            datasets.append(
                Dataset(
                    site=SITES[int(self.dataset_site[d])],
                    field=int(self.dataset_field[d]),
                    hjd=self.hjd[rows],
                    flux=self.flux[rows],
                    flux_err=self.flux_err[rows],
                    sky=self.sky[rows],
                    fwhm=self.fwhm[rows],
                    airmass=self.airmass[rows],
                    psf_quality=self.psf_quality[rows],
                    band=self.band[rows],
                )
            )
        name = self.names[index]
        star_id = int(name) if name.isdigit() else -1
        return Star(star_id, name, np.nan, np.nan, -1, np.nan, np.nan, tuple(datasets))


def prepare_batch(
    table: DatasetTable,
    rules: Sequence[TriggerRule],
    *,
    as_of: float = np.inf,
    start: float = -np.inf,
    max_length: int = MAX_LENGTH,
) -> list[Candidate | InsufficientDataError]:
    """Per star of ``table`` (with its rule), what :func:`~model.features.prepare` returns for
    it, or the :class:`~model.features.InsufficientDataError` it raises."""
    n_stars = len(table)
    if n_stars == 0:
        return []
    columns = np.empty((len(SERIES_COLUMNS), len(table.hjd)), dtype=np.float64)
    series_offsets = np.zeros(n_stars * N_SITES + 1, dtype=np.int64)
    series_field = np.full(n_stars * N_SITES, -1, dtype=np.int64)
    dropped = np.zeros((n_stars, len(DROPPED_REASONS)), dtype=np.int64)
    unsorted = np.zeros(n_stars, dtype=np.bool_)
    _clean_select(
        table.star_offsets,
        table.dataset_site,
        table.dataset_field,
        table.dataset_offsets,
        table.hjd,
        table.flux,
        table.flux_err,
        table.sky,
        table.fwhm,
        table.airmass,
        table.psf_quality,
        table.band,
        float(as_of),
        float(start),
        max_length,
        OUTLIER_HALF_WINDOW,
        OUTLIER_N_MAD,
        columns,
        series_offsets,
        series_field,
        dropped,
        unsorted,
    )
    hjd, flux, flux_err = columns[0], columns[1], columns[2]
    counts = np.diff(series_offsets).reshape(n_stars, N_SITES)
    n_points = int(series_offsets[-1])
    trigger = evaluate_arrays(  # our kernel built the series: clean, sorted, consistent
        hjd[:n_points],
        flux[:n_points],
        flux_err[:n_points],
        series_offsets,
        np.arange(0, N_SITES * n_stars + 1, N_SITES, dtype=np.int64),
        k=np.array([r.k for r in rules], dtype=np.int64),
        n=np.array([r.n for r in rules], dtype=np.int64),
        n_sigma=np.array([r.n_sigma for r in rules], dtype=np.float64),
        dchi2_min=np.array([r.dchi2_min for r in rules], dtype=np.float64),
        average=np.array([r.average for r in rules], dtype=np.int64),
        baseline_part=np.array([r.baseline_part for r in rules], dtype=np.int64),
    )
    # Steps 7-8 at every point of every star, element by element as for one star.
    lengths = np.diff(series_offsets)
    series_index = np.repeat(np.arange(n_stars * N_SITES), lengths)
    star_index = series_index // N_SITES
    bit = (trigger.combination[star_index] >> (series_index % N_SITES)) & 1
    lines = broken_line(
        hjd[:n_points],
        trigger.intercepts[series_index],
        bit.astype(np.bool_),
        trigger.slope[star_index],
        trigger.t_break[star_index],
    )
    ends = series_offsets[1:]
    last = np.where(lengths > 0, hjd[np.maximum(ends - 1, 0)], -np.inf)
    t_last = last.reshape(n_stars, N_SITES).max(axis=1)
    star_points = series_offsets[::N_SITES]
    flux_scale = dataset_medians(flux_err[:n_points], star_points)  # np.median of each star's
    baseline = trigger.baseline[series_index]
    scale = flux_scale[star_index]
    with np.errstate(invalid="ignore", divide="ignore"):  # stars without points: unused
        features = np.stack(
            [
                hjd[:n_points] - t_last[star_index],
                np.arcsinh((flux[:n_points] - baseline) / scale),
                flux_err[:n_points] / scale,
                *(columns[c, :n_points] for c in range(3, 7)),
                np.arcsinh((lines - baseline) / scale),
            ],
            axis=1,
        ).astype(np.float32)
    out: list[Candidate | InsufficientDataError] = []
    for s in range(n_stars):
        if unsorted[s]:
            try:
                out.append(
                    prepare(
                        table.star(s),
                        as_of=as_of,
                        start=start,
                        rule=rules[s],
                        max_length=max_length,
                    )
                )
            except InsufficientDataError as error:
                out.append(error)
            continue
        if int(counts[s].max()) < MIN_POINTS:
            detail = ", ".join(f"{site} {int(n)}" for site, n in zip(SITES, counts[s], strict=True))
            out.append(
                InsufficientDataError(
                    f"star {table.names[s]}: fewer than {MIN_POINTS} valid I-band points in "
                    f"every site ({detail})"
                )
            )
            continue
        first = s * N_SITES
        bounds = series_offsets[first : first + N_SITES + 1].tolist()
        x = np.zeros((N_SITES, int(counts[s].max()), N_FEATURES), dtype=np.float32)
        series: list[SiteSeries | None] = []
        site_lines: list[F64] = []
        for i in range(N_SITES):
            a, b = bounds[i], bounds[i + 1]
            if b == a:
                series.append(None)
                site_lines.append(np.zeros(0, dtype=np.float64))
                continue
            x[i, : b - a] = features[a:b]
            values = columns[:, a:b]
            field = int(series_field[first + i])
            series.append(SiteSeries(SITES[i], field, *(values[c] for c in range(7))))
            site_lines.append(lines[a:b])
        fields = tuple(-1 if item is None else item.field for item in series)
        out.append(
            Candidate(
                x=x,
                lengths=counts[s].astype(np.int64),
                trigger=trigger.star(s),
                fields=(fields[0], fields[1], fields[2]),
                t_last=float(t_last[s]),
                flux_scale=float(flux_scale[s]),
                n_removed=int(dropped[s, _CLEANING] + dropped[s, _OUTLIERS]),
                dropped=dict(zip(DROPPED_REASONS, dropped[s].tolist(), strict=True)),
                series=tuple(series),
                lines=tuple(site_lines),
            )
        )
    return out


@numba.njit(cache=True)
def _clean_select(  # pragma: no cover - numba
    star_offsets: I64,
    dataset_site: I64,
    dataset_field: I64,
    dataset_offsets: I64,
    hjd: F64,
    flux: F64,
    flux_err: F64,
    sky: F32,
    fwhm: F32,
    airmass: F32,
    psf_quality: F32,
    band: npt.NDArray[np.uint8],
    as_of: float,
    start: float,
    max_length: int,
    half_window: int,
    n_mad: float,
    columns: F64,
    series_offsets: I64,
    series_field: I64,
    dropped: I64,
    unsorted: npt.NDArray[np.bool_],
) -> None:
    """Steps 1-5 of every star (see :mod:`model.features`): per star and site the kept
    dataset's clean, cropped, outlier-filtered points into ``columns`` (7, N) in
    :data:`SERIES_COLUMNS` order, site after site (``series_offsets``, ``series_field``); the
    I-band points in the time window that no series keeps, (S, 4) by reason in
    :data:`DROPPED_REASONS` order (``dropped``); whether a kept series is unsorted."""
    n_stars = dropped.shape[0]
    n_sites = series_field.size // max(n_stars, 1)
    point = 0
    series_offsets[0] = 0
    for s in range(n_stars):
        d0 = star_offsets[s]
        d1 = star_offsets[s + 1]
        in_window = 0  # I-band points in the time window, every dataset
        for d in range(d0, d1):
            for p in range(dataset_offsets[d], dataset_offsets[d + 1]):
                if band[p] == 0 and hjd[p] <= as_of and hjd[p] >= start:
                    in_window += 1
        used_in_window = 0  # the same, in the datasets kept
        for site in range(n_sites):
            best = -1
            best_n = 0
            for d in range(d0, d1):
                if dataset_site[d] != site:
                    continue
                a = dataset_offsets[d]
                b = dataset_offsets[d + 1]
                present = _present(a, b, sky, fwhm, airmass, psf_quality)
                n = 0
                for p in range(a, b):
                    n += _keep(
                        hjd[p], flux[p], flux_err[p], np.float64(sky[p]), np.float64(fwhm[p]),
                        np.float64(airmass[p]), np.float64(psf_quality[p]), band[p], present,
                        as_of, start,
                    )  # fmt: skip
                if n == 0:
                    continue
                # Most valid points, then the lower field: rank (n, -field), strictly better.
                if (
                    best < 0
                    or n > best_n
                    or (n == best_n and -dataset_field[d] > -dataset_field[best])
                ):
                    best = d
                    best_n = n
            index = s * n_sites + site
            if best >= 0:
                series_field[index] = dataset_field[best]
                a = dataset_offsets[best]
                b = dataset_offsets[best + 1]
                for p in range(a, b):
                    if band[p] == 0 and hjd[p] <= as_of and hjd[p] >= start:
                        used_in_window += 1
                dropped[s, _CLEANING] -= best_n  # + used_in_window below
                dropped[s, _BEYOND_CAP] += max(best_n - max_length, 0)
                present = _present(a, b, sky, fwhm, airmass, psf_quality)
                skip = max(best_n - max_length, 0)  # the cap keeps the most recent points
                first = point
                for p in range(a, b):
                    if not _keep(
                        hjd[p], flux[p], flux_err[p], np.float64(sky[p]), np.float64(fwhm[p]),
                        np.float64(airmass[p]), np.float64(psf_quality[p]), band[p], present,
                        as_of, start,
                    ):  # fmt: skip
                        continue
                    if skip > 0:
                        skip -= 1
                        continue
                    columns[0, point] = hjd[p]
                    columns[1, point] = flux[p]
                    columns[2, point] = flux_err[p]
                    columns[3, point] = np.float64(sky[p]) if present[0] else np.nan
                    columns[4, point] = np.float64(fwhm[p]) if present[1] else np.nan
                    columns[5, point] = np.float64(airmass[p]) if present[2] else np.nan
                    columns[6, point] = np.float64(psf_quality[p]) if present[3] else np.nan
                    point += 1
                n = point - first
                dropped[s, _OUTLIERS] += n
                if n >= 2 * half_window + 1:
                    outliers = outlier_mask_sliding(columns[1, first:point], half_window, n_mad)
                    kept = first
                    for i in range(n):
                        if outliers[i]:
                            continue
                        for c in range(columns.shape[0]):
                            columns[c, kept] = columns[c, first + i]
                        kept += 1
                    point = kept
                dropped[s, _OUTLIERS] -= point - first
                for p in range(first + 1, point):
                    if columns[0, p] < columns[0, p - 1]:
                        unsorted[s] = True
            series_offsets[index + 1] = point
        dropped[s, _CLEANING] += used_in_window
        dropped[s, _OTHER_DATASETS] = in_window - used_in_window


def valid_points(table: DatasetTable) -> npt.NDArray[np.bool_]:
    """(N,) bool: the points of every dataset of ``table`` that survive the cleaning rules,
    :func:`model.features.valid_mask` of each dataset (band and time not considered), in one
    compiled pass."""
    keep = np.zeros(len(table.hjd), dtype=np.bool_)
    _valid_points(
        table.dataset_offsets, table.hjd, table.flux, table.flux_err, table.sky, table.fwhm,
        table.airmass, table.psf_quality, keep,
    )  # fmt: skip
    return keep


@numba.njit(cache=True)
def _valid_points(  # pragma: no cover - numba
    dataset_offsets: I64,
    hjd: F64,
    flux: F64,
    flux_err: F64,
    sky: F32,
    fwhm: F32,
    airmass: F32,
    psf_quality: F32,
    keep: npt.NDArray[np.bool_],
) -> None:
    for d in range(len(dataset_offsets) - 1):
        a = dataset_offsets[d]
        b = dataset_offsets[d + 1]
        present = _present(a, b, sky, fwhm, airmass, psf_quality)
        for p in range(a, b):
            keep[p] = _keep(
                hjd[p], flux[p], flux_err[p], np.float64(sky[p]), np.float64(fwhm[p]),
                np.float64(airmass[p]), np.float64(psf_quality[p]), 0, present, np.inf, -np.inf,
            )  # fmt: skip


@numba.njit(cache=True)
def _present(  # pragma: no cover - numba
    a: int, b: int, sky: F32, fwhm: F32, airmass: F32, psf_quality: F32
) -> tuple[bool, bool, bool, bool]:
    """Which optional columns (sky, fwhm, airmass, psf_quality) have a finite value in points
    ``a:b`` (a column without one is *missing*: kept as NaN, it drops no point)."""
    sky_, fwhm_, airmass_, psf_ = False, False, False, False
    for p in range(a, b):
        sky_ |= np.isfinite(sky[p])
        fwhm_ |= np.isfinite(fwhm[p])
        airmass_ |= np.isfinite(airmass[p])
        psf_ |= np.isfinite(psf_quality[p])
    return sky_, fwhm_, airmass_, psf_


# Scalars only: a helper taking arrays would count references to each of them on every call,
# which here costs twenty times the checks.
@numba.njit(cache=True)
def _keep(  # pragma: no cover - numba
    hjd: float,
    flux: float,
    flux_err: float,
    sky: float,
    fwhm: float,
    airmass: float,
    psf_quality: float,
    band: int,
    present: tuple[bool, bool, bool, bool],
    as_of: float,
    start: float,
) -> bool:
    """A point survives the cleaning rules (:func:`model.features.valid_mask`), is I band and
    lies in the time window; ``present`` as :func:`_present` gives it for its dataset."""
    if not (np.isfinite(hjd) and np.isfinite(flux) and np.isfinite(flux_err)):
        return False
    if not flux_err > 0:
        return False
    if (present[0] and not np.isfinite(sky)) or (present[1] and not np.isfinite(fwhm)):
        return False
    if (present[2] and not np.isfinite(airmass)) or (present[3] and not np.isfinite(psf_quality)):
        return False
    if psf_quality < 0 or psf_quality > 100 or fwhm < 0:
        return False
    return band == 0 and hjd <= as_of and hjd >= start


@numba.njit(cache=True)
def _neighbour_median(
    flux: F64, i: int, half_window: int, buffer: F64
) -> float:  # pragma: no cover
    """Median of ``flux``'s neighbours of ``i`` within ``half_window`` (``i`` excluded), by
    insertion sort into ``buffer``: :func:`model.features._outlier_mask`'s own loop."""
    n = len(flux)
    m = 0
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
    return buffer[m // 2] if m % 2 else 0.5 * (buffer[m // 2 - 1] + buffer[m // 2])


@numba.njit(cache=True)
def outlier_mask_sliding(
    flux: F64, half_window: int, n_mad: float
) -> npt.NDArray[np.bool_]:  # pragma: no cover
    """:func:`model.features._outlier_mask`, value for value, for ``len(flux) >= 2 *
    half_window + 1`` finite fluxes: the running median keeps the full window sorted and slides
    it (one value out, one in) instead of sorting every point's neighbours afresh. Without the
    point itself the window holds ``2 * half_window`` values, whose middle two are the same
    order statistics of the same values whichever way they are found."""
    n = len(flux)
    for i in range(n):
        if not np.isfinite(flux[i]):
            return _outlier_mask(flux, half_window, n_mad)
    out = np.zeros(n, dtype=np.bool_)
    residual = np.empty(n)
    buffer = np.empty(2 * half_window)
    for i in range(min(half_window, n)):
        residual[i] = flux[i] - _neighbour_median(flux, i, half_window, buffer)
    for i in range(max(n - half_window, half_window), n):
        residual[i] = flux[i] - _neighbour_median(flux, i, half_window, buffer)
    width = 2 * half_window + 1
    window = np.empty(width)  # flux[i - half_window : i + half_window + 1], sorted
    for j in range(width):
        value = flux[j]
        k = j
        while k > 0 and window[k - 1] > value:
            window[k] = window[k - 1]
            k -= 1
        window[k] = value
    for i in range(half_window, n - half_window):
        if i > half_window:
            leaving = flux[i - half_window - 1]
            k = 0
            while window[k] != leaving:
                k += 1
            while k < width - 1:
                window[k] = window[k + 1]
                k += 1
            value = flux[i + half_window]
            k = width - 1
            while k > 0 and window[k - 1] > value:
                window[k] = window[k - 1]
                k -= 1
            window[k] = value
        own = 0
        while window[own] != flux[i]:
            own += 1
        low = window[half_window - 1] if half_window - 1 < own else window[half_window]
        high = window[half_window] if half_window < own else window[half_window + 1]
        residual[i] = flux[i] - 0.5 * (low + high)
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
