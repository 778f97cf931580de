"""LensNet instances from simulated seasons, cut where the daemon would score them.

**Seasons.** Training, validation and test are disjoint sets of whole seasons
(:data:`TRAIN_SEASONS`, :data:`VALIDATION_SEASONS`, :data:`TEST_SEASONS`), each season drawn by
:func:`model.simulation.calendar.season_config` from its own seed: different frames, nights,
weather, site calendars and cadence mix, so nothing the model is tested on shares a night with
what it learnt or was selected on.

**Crops** (paper §5.3, adapted to what the daemon shows the model). LensNet only ever sees stars
the AlertFinder triggered on, at the times :mod:`model.timeline` says the daemon calls it. Each
star gives up to ``crops`` instances cut at those times (``as_of``): always its first call, then
calls drawn at random among the rest:

- YES (events): calls from the start of the rise (the label's ``t_rise_start``) to
  ``event_after_peak_days`` after the peak, so that events are learnt early in their rise, at
  the peak and falling after it; calls before the rise (noise on a flat baseline) are not used.
- MAYBE (artefacts) and NO (variables, trends, noise): every call.
- A NO star that keeps triggering gives up to ``negative_crops`` (the daemon scores it at every
  call, so its hardest moments matter most).
- Stars the daemon never scores: a NO star gives one instance at a random time with probability
  ``untriggered_probability`` (what a flat light curve looks like, the anchor of the site
  scores); events and artefacts that never trigger give none.

With probability ``left_crop_probability`` the history is also cut on the left (at least
:data:`MIN_HISTORY_DAYS` kept before the rise or the call). **Missing auxiliary columns:** with
probability ``magnitude_only_probability`` a star's datasets all lose sky, FWHM, airmass and PSF
quality (a magnitude-only archive), otherwise each dataset loses them with probability
``aux_missing_probability``; preprocessing treats them as missing, as it does for real files.

**Site labels.** ``site_target[i, s]`` is 1 when the instance is YES or MAYBE and site ``s``'s
own noiseless signal (:class:`model.simulate.SiteTruth`, in reference conditions) rises at least
``site_signal_sigma`` typical errors above its median within the instance's window; otherwise
0. Training teaches the per-site scores with it, so a site whose data are flat scores low.

Built arrays are cached as ``.npz`` under :data:`DEFAULT_CACHE_DIR` (or ``--cache-dir``), keyed
by the season, the crop recipe and :func:`code_version`, a hash of the simulator, feature,
timeline and trigger source files: changed code never reuses stale arrays.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from consumer.seasons.archive import Star
from model.features import MAX_LENGTH, N_FEATURES, N_SITES, InsufficientDataError, prepare
from model.lensnet import CLASS_NAMES
from model.simulate import Label, SimulationConfig, SiteTruth, simulate_star_truth
from model.simulation.calendar import season_config
from model.timeline import DEFAULT_CADENCE, Cadence, Timeline, timelines

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Days of data always kept before the rise (or before the call) by a left crop.
MIN_HISTORY_DAYS: Final = 15.0
#: Stars simulated and cut per task (one timeline call per chunk).
CHUNK: Final = 100
_AUX: Final = ("sky", "fwhm", "airmass", "psf_quality")


@dataclass(frozen=True)
class SeasonSet:
    """Whole seasons of one split: one per seed, ``n_stars`` stars each."""

    name: str
    seeds: tuple[int, ...]
    n_stars: int

    def configs(self) -> list[SimulationConfig]:
        return [season_config(seed, self.n_stars) for seed in self.seeds]


#: The splits' seasons. Seeds are never shared; the demo season (seed 7) is in none of them.
TRAIN_SEASONS: Final = SeasonSet("train", tuple(range(1001, 1009)), 3000)
VALIDATION_SEASONS: Final = SeasonSet("validation", (2001, 2002), 2000)
TEST_SEASONS: Final = SeasonSet("test", (3001, 3002), 3000)


@dataclass(frozen=True)
class CropConfig:
    """How instances are cut from each star (see the module docstring)."""

    crops: int = 4
    negative_crops: int = 4
    left_crop_probability: float = 0.25
    untriggered_probability: float = 0.5
    magnitude_only_probability: float = 0.2
    aux_missing_probability: float = 0.1
    event_after_peak_days: float = 25.0
    site_signal_sigma: float = 5.0


@dataclass(eq=False)
class Rows:
    """Prepared candidates stored compactly: only their real steps, concatenated.

    Attributes
    ----------
    x : (P, F) float32, the real steps of every (candidate, site), concatenated.
    offsets : (N, S + 1) int64, candidate i site s is rows ``offsets[i, s]:offsets[i, s + 1]``.
    lengths : (N, S) int64.
    """

    x: F32
    offsets: I64
    lengths: I64

    def __len__(self) -> int:
        return len(self.lengths)

    @staticmethod
    def of(parts: Sequence[tuple[F32, I64]]) -> Rows:
        """From ``(x (S, L, F), lengths (S,))`` pairs (each site's real steps first)."""
        lengths = np.asarray([n for _, n in parts], dtype=np.int64).reshape(-1, N_SITES)
        rows = [x[s, : int(n[s])] for x, n in parts for s in range(N_SITES)]
        x = np.concatenate(rows) if rows else np.zeros((0, N_FEATURES), np.float32)
        flat = np.concatenate([[0], np.cumsum(lengths.ravel())]).astype(np.int64)
        table = flat[np.arange(len(lengths))[:, None] * N_SITES + np.arange(N_SITES + 1)]
        return Rows(x=x.astype(np.float32, copy=False), offsets=table, lengths=lengths)

    def item(self, i: int) -> tuple[F32, I64]:
        """Candidate ``i`` as ``(x (S, L, F), lengths (S,))`` for :func:`~model.features.collate`
        (each site's real steps first, zeros after)."""
        lengths = self.lengths[i]
        out = np.zeros((N_SITES, int(lengths.max()), N_FEATURES), dtype=np.float32)
        for s in range(N_SITES):
            n = int(lengths[s])
            if n:
                out[s, :n] = self.x[self.offsets[i, s] : self.offsets[i, s + 1]]
        return out, lengths

    def gather_index(self, index: I64, max_length: int = MAX_LENGTH) -> tuple[I64, I64, I64, I64]:
        """Where instances ``index`` go in a padded batch: ``(lengths (B, S), source, slot,
        step)`` with ``batch.reshape(B * S, L, F)[slot, step] = x[source]`` (each site's most
        recent ``max_length`` steps first). One vectorised computation for the whole batch."""
        lengths = np.minimum(self.lengths[index], max_length)  # (B, S)
        rows = lengths.ravel()
        first = (self.offsets[index, 1:] - lengths).ravel()  # most recent steps
        total = int(rows.sum())
        starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
        source = np.repeat(first - starts, rows) + np.arange(total)
        slot = np.repeat(np.arange(len(rows)), rows)
        step = np.arange(total) - np.repeat(starts, rows)
        return lengths, source, slot, step

    def batch(self, index: I64, max_length: int = MAX_LENGTH) -> tuple[F32, I64]:
        """``(x (B, S, L, F), lengths (B, S))`` of instances ``index`` in one vectorised gather
        (the training loop's collate): each site's most recent ``max_length`` steps first."""
        lengths, source, slot, step = self.gather_index(index, max_length)
        length = int(lengths.max()) if len(index) else 0
        out = np.zeros((len(index), N_SITES, length, N_FEATURES), dtype=np.float32)
        out.reshape(len(index) * N_SITES, length, N_FEATURES)[slot, step] = self.x[source]
        return out, lengths


@dataclass(eq=False)
class Instances(Rows):
    """Cropped, preprocessed instances with their truth; per-instance arrays have shape (N,).

    Attributes (beyond :class:`Rows`)
    ---------------------------------
    label : class index into :data:`~model.lensnet.CLASS_NAMES` (0 No, 1 Maybe, 2 Yes).
    site_target : (N, S) float32, 1 where the site's own data show the rise (YES/MAYBE only).
    season : simulator seed of the star's season.
    star_index : star index in its season.
    as_of : full HJD of the crop's last observation (the call).
    t_peak : the label's peak time (NaN without a rise window).
    fraction : fraction of the rise visible, ``(as_of - t_rise_start) / (t_peak -
        t_rise_start)`` (above 1 after the peak; NaN without a rise window).
    subclass : subclass name per instance.
    aux_missing : the instance's auxiliary columns were removed (all datasets).
    n_dropped : crops dropped for lack of data.
    """

    label: I64
    site_target: F32
    season: I64
    star_index: I64
    as_of: F64
    t_peak: F64
    fraction: F64
    subclass: npt.NDArray[np.str_]
    aux_missing: npt.NDArray[np.bool_]
    n_dropped: int = 0

    @staticmethod
    def concatenate(parts: Sequence[Instances]) -> Instances:
        """One set of instances from several (offsets shifted)."""
        shift = np.cumsum([0] + [len(p.x) for p in parts[:-1]])
        return Instances(
            x=_cat([p.x for p in parts], np.float32, (0, N_FEATURES)),
            offsets=_cat(
                [p.offsets + s for p, s in zip(parts, shift, strict=True)],
                np.int64,
                (0, N_SITES + 1),
            ),
            lengths=_cat([p.lengths for p in parts], np.int64, (0, N_SITES)),
            label=_cat([p.label for p in parts], np.int64, (0,)),
            site_target=_cat([p.site_target for p in parts], np.float32, (0, N_SITES)),
            season=_cat([p.season for p in parts], np.int64, (0,)),
            star_index=_cat([p.star_index for p in parts], np.int64, (0,)),
            as_of=_cat([p.as_of for p in parts], np.float64, (0,)),
            t_peak=_cat([p.t_peak for p in parts], np.float64, (0,)),
            fraction=_cat([p.fraction for p in parts], np.float64, (0,)),
            subclass=np.concatenate([p.subclass for p in parts]).astype(np.str_)
            if parts
            else np.zeros(0, dtype=np.str_),
            aux_missing=_cat([p.aux_missing for p in parts], np.bool_, (0,)),
            n_dropped=sum(p.n_dropped for p in parts),
        )


def _cat(arrays: Sequence[npt.NDArray[Any]], dtype: type, empty: tuple[int, ...]) -> Any:
    return (
        np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(empty, dtype=dtype)
    )


# ---------------------------------------------------------------------------------- cutting


def without_aux(star: Star, datasets: Sequence[int] | None = None) -> Star:
    """The star with sky, FWHM, airmass and PSF quality removed (NaN) from ``datasets``
    (indices; all when None), as in a magnitude-only archive file."""
    chosen = range(len(star.datasets)) if datasets is None else datasets
    replaced = list(star.datasets)
    for i in chosen:
        d = replaced[i]
        nan = np.full(len(d), np.nan, dtype=np.float32)
        replaced[i] = dataclasses.replace(d, sky=nan, fwhm=nan, airmass=nan, psf_quality=nan)
    return dataclasses.replace(star, datasets=tuple(replaced))


def call_times(label: Label, timeline: Timeline, crop: CropConfig) -> F64:
    """The daemon's LensNet calls that may be used as ``as_of`` for this star's class."""
    times = timeline.scored
    if label.label == "YES":
        if not math.isfinite(label.t_rise_start):
            return np.zeros(0)
        end = label.t_peak + crop.event_after_peak_days
        return times[(times >= label.t_rise_start) & (times <= end)]
    return times


def site_targets(
    label: Label, truth: Sequence[SiteTruth], start: float, as_of: float, crop: CropConfig
) -> F32:
    """(S,) 1 where a YES/MAYBE star's site shows its signal within ``[start, as_of]``."""
    out = np.zeros(N_SITES, dtype=np.float32)
    if label.label == "NO":
        return out
    for part in truth:
        keep = (part.hjd >= start) & (part.hjd <= as_of)
        if keep.sum() < 3:
            continue
        driver = part.driver[keep]
        if float(np.max(driver) - np.median(driver)) >= crop.site_signal_sigma * part.sigma:
            out[part.site] = 1.0
    return out


@dataclass(frozen=True)
class _Crop:
    start: float
    as_of: float
    aux_missing: tuple[int, ...] | None  # dataset indices losing aux columns; None: none
    all_aux_missing: bool


def crops_of(
    rng: np.random.Generator, star: Star, label: Label, timeline: Timeline, crop: CropConfig
) -> list[_Crop]:
    """Where one star is cut (see the module docstring)."""
    times = call_times(label, timeline, crop)
    hjd = np.concatenate([d.hjd[d.band == 0] for d in star.datasets] + [np.zeros(0)])
    if len(hjd) == 0:
        return []
    t_first, t_last = float(hjd.min()), float(hjd.max())
    if len(times):
        chosen = [float(times[0])]
        rest = times[1:]
        limit = crop.negative_crops if label.label == "NO" else crop.crops
        extra = min(limit - 1, len(rest))
        chosen += [float(t) for t in rng.choice(rest, extra, replace=False)] if extra else []
    elif label.label == "NO" and rng.uniform() < crop.untriggered_probability:
        low = min(t_first + MIN_HISTORY_DAYS, t_last)
        chosen = [float(rng.uniform(low, t_last))]
    else:
        return []
    out = []
    for as_of in chosen:
        anchor = (
            label.t_rise_start
            if label.label != "NO" and math.isfinite(label.t_rise_start)
            else as_of
        )
        anchor = min(anchor, as_of)
        start = -math.inf
        if rng.uniform() < crop.left_crop_probability and anchor - MIN_HISTORY_DAYS > t_first:
            start = float(rng.uniform(t_first, anchor - MIN_HISTORY_DAYS))
        if rng.uniform() < crop.magnitude_only_probability:
            out.append(_Crop(start, as_of, None, True))
            continue
        lost = tuple(
            i for i in range(len(star.datasets)) if rng.uniform() < crop.aux_missing_probability
        )
        out.append(_Crop(start, as_of, lost or None, False))
    return out


def build_instances(
    config: SimulationConfig,
    star_indices: Sequence[int] | I64,
    crop: CropConfig,
    *,
    cadence: Cadence = DEFAULT_CADENCE,
    max_length: int = MAX_LENGTH,
) -> Instances:
    """Simulate the stars of one season and cut their instances. ``max_length`` below 1500 is
    for fast tests only."""
    rows: list[F32] = []
    meta: dict[str, list[object]] = {name: [] for name in _META}
    offsets: list[list[int]] = []
    n_rows = 0
    n_dropped = 0
    indices = [int(i) for i in star_indices]
    for chunk_start in range(0, len(indices), CHUNK):
        chunk = indices[chunk_start : chunk_start + CHUNK]
        simulated = [simulate_star_truth(config, index) for index in chunk]
        lines = timelines([star for star, _, _ in simulated], cadence)
        for index, (star, label, truth), timeline in zip(chunk, simulated, lines, strict=True):
            rng = np.random.default_rng([config.seed, 101, index])
            for cut in crops_of(rng, star, label, timeline, crop):
                seen = star
                if cut.all_aux_missing:
                    seen = without_aux(star)
                elif cut.aux_missing is not None:
                    seen = without_aux(star, cut.aux_missing)
                fields = [d.field for d in star.datasets]
                try:
                    candidate = prepare(
                        seen,
                        as_of=cut.as_of,
                        start=cut.start,
                        rule=cadence.rule_for(fields),
                        max_length=max_length,
                    )
                except InsufficientDataError:
                    n_dropped += 1
                    continue
                site_offsets = [n_rows]
                for s in range(N_SITES):
                    n = int(candidate.lengths[s])
                    if n:
                        rows.append(candidate.x[s, :n])
                    n_rows += n
                    site_offsets.append(n_rows)
                offsets.append(site_offsets)
                rising = math.isfinite(label.t_rise_start) and label.t_peak > label.t_rise_start
                fraction = (
                    (cut.as_of - label.t_rise_start) / (label.t_peak - label.t_rise_start)
                    if rising
                    else math.nan
                )
                values = {
                    "lengths": candidate.lengths,
                    "label": CLASS_NAMES.index(label.label),
                    "site_target": site_targets(label, truth, cut.start, cut.as_of, crop),
                    "season": config.seed,
                    "star_index": index,
                    "as_of": cut.as_of,
                    "t_peak": label.t_peak,
                    "fraction": fraction,
                    "subclass": label.subclass,
                    "aux_missing": cut.all_aux_missing,
                }
                for name, value in values.items():
                    meta[name].append(value)
    return Instances(
        x=np.concatenate(rows) if rows else np.zeros((0, N_FEATURES), np.float32),
        offsets=np.asarray(offsets, dtype=np.int64).reshape(-1, N_SITES + 1),
        lengths=np.asarray(meta["lengths"], dtype=np.int64).reshape(-1, N_SITES),
        label=np.asarray(meta["label"], dtype=np.int64),
        site_target=np.asarray(meta["site_target"], dtype=np.float32).reshape(-1, N_SITES),
        season=np.asarray(meta["season"], dtype=np.int64),
        star_index=np.asarray(meta["star_index"], dtype=np.int64),
        as_of=np.asarray(meta["as_of"], dtype=np.float64),
        t_peak=np.asarray(meta["t_peak"], dtype=np.float64),
        fraction=np.asarray(meta["fraction"], dtype=np.float64),
        subclass=np.asarray(meta["subclass"], dtype=np.str_),
        aux_missing=np.asarray(meta["aux_missing"], dtype=np.bool_),
        n_dropped=n_dropped,
    )


_META: Final = (
    "lengths",
    "label",
    "site_target",
    "season",
    "star_index",
    "as_of",
    "t_peak",
    "fraction",
    "subclass",
    "aux_missing",
)


# ------------------------------------------------------------------------------ whole sets

#: Where built arrays are cached unless the CLI's ``--cache-dir`` says otherwise.
DEFAULT_CACHE_DIR: Final = Path.home() / ".cache" / "lensnet"
#: Source files whose content decides the instances: any change gives a new cache key.
_CODE_FILES: Final = (
    "model/simulate.py",
    "model/simulation",
    "model/features.py",
    "model/dataset.py",
    "model/timeline.py",
    "consumer/alertfinder/api.py",
    "consumer/alertfinder/kernels.py",
    "consumer/seasons/archive.py",
)


def code_version() -> str:
    """12 hex digits of SHA-256 over the simulator, feature, timeline and trigger sources."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in _CODE_FILES:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(root)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def _task(args: tuple[SimulationConfig, list[int], CropConfig, Cadence, int]) -> Instances:
    config, indices, crop, cadence, max_length = args
    return build_instances(config, indices, crop, cadence=cadence, max_length=max_length)


def _tasks(
    seasons: SeasonSet, crop: CropConfig, cadence: Cadence, max_length: int, size: int
) -> Iterator[tuple[SimulationConfig, list[int], CropConfig, Cadence, int]]:
    for config in seasons.configs():
        for start in range(0, config.n_stars, size):
            indices = list(range(start, min(start + size, config.n_stars)))
            yield config, indices, crop, cadence, max_length


def load_set(
    seasons: SeasonSet,
    crop: CropConfig,
    *,
    cadence: Cadence = DEFAULT_CADENCE,
    cache: Path | None = None,
    workers: int = 1,
    progress: bool = False,
    max_length: int = MAX_LENGTH,
) -> Instances:
    """The instances of a set of seasons, built (``workers`` processes) or read from the
    ``.npz`` cache (``cache=None``: none)."""
    key = json.dumps(
        [asdict(seasons), asdict(crop), asdict(cadence), max_length, code_version()],
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = None if cache is None else cache / f"instances-{seasons.name}-{digest}.npz"
    if path is not None and path.exists():
        with np.load(path) as data:
            fields = {f.name: data[f.name] for f in dataclasses.fields(Instances)}
            fields["n_dropped"] = int(fields["n_dropped"])
            return Instances(**fields)
    tasks = list(_tasks(seasons, crop, cadence, max_length, 4 * CHUNK))
    bar = tqdm(
        total=len(tasks), desc=f"instances ({seasons.name})", disable=None if progress else True
    )
    parts: list[Instances] = []
    if workers > 1:
        _warm_up(cadence)
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for part in pool.imap(_task, tasks):
                parts.append(part)
                bar.update()
    else:
        for task in tasks:
            parts.append(_task(task))
            bar.update()
    bar.close()
    instances = Instances.concatenate(parts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{f.name: getattr(instances, f.name) for f in dataclasses.fields(Instances)})
        tmp.replace(path)
    return instances


def _warm_up(cadence: Cadence) -> None:
    """Compile the numba kernels once in the parent, so forked workers inherit them."""
    config = SimulationConfig(n_stars=2, seed=0)
    build_instances(config, [0, 1], CropConfig(untriggered_probability=1.0), cadence=cadence)


def class_weights(labels: I64, n_classes: int = len(CLASS_NAMES)) -> F64:
    """(n_classes,) inverse-frequency weights, mean 1 over the instances (paper §7)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)


__all__ = [
    "DEFAULT_CACHE_DIR",
    "TEST_SEASONS",
    "TRAIN_SEASONS",
    "VALIDATION_SEASONS",
    "CropConfig",
    "Instances",
    "Rows",
    "SeasonSet",
    "build_instances",
    "class_weights",
    "code_version",
    "load_set",
]
