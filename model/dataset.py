"""Training instances for LensNet from simulated stars (paper §5.3), split by star.

Stars come from :func:`model.simulate.simulate_star` in memory. Each star gives ``crops``
instances (paper §5.3 cropping on both sides, the same crop for every site):

- **Right crop** (``as_of``): for stars with a rise window (every YES and MAYBE, and NO
  subclasses that rise: flares, outbursts...), ``as_of = t_rise_start + f (t_peak -
  t_rise_start)`` with the *fraction of the rise visible* ``f`` drawn from U(``min_fraction``,
  1); for stars without one, uniform in the season after :data:`MIN_HISTORY_DAYS` of data.
- **Left crop** (``start``): with probability 1/2 none; otherwise uniform between the first
  observation and :data:`MIN_HISTORY_DAYS` before the rise (or before ``as_of``), so that at
  least that much history always remains.

``fraction`` is recorded per instance (NaN without a rise window) for accuracy vs visibility
(paper Fig. 11). Crops with fewer than 10 valid points in every site are dropped and counted.

Split: the star indices ``0..n_stars-1`` are permuted by ``seed`` and cut 70/15/15 into
train/val/test, so no star is in two sets and the test set is the same for the same seed and
star count. Built arrays are cached as ``.npz`` under ``DEFAULT_CACHE_DIR`` or the CLI's
``--cache-dir`` (outside the repo).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from model.features import MAX_LENGTH, N_FEATURES, N_SITES, InsufficientDataError, prepare
from model.lensnet import CLASS_NAMES
from model.simulate import Label, SimulationConfig, simulate_star

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

Split = Literal["train", "val", "test"]
SPLIT_FRACTIONS: Final = (0.70, 0.15, 0.15)
#: Days of data always kept before the rise (or before ``as_of`` for stars without one).
MIN_HISTORY_DAYS: Final = 15.0
#: Bump when the instance recipe changes, so stale caches are not reused.
RECIPE_VERSION: Final = 2


@dataclass(frozen=True)
class CropConfig:
    """How instances are cut from each star.

    Attributes
    ----------
    crops : instances per star (right crop re-drawn each time).
    min_fraction : lowest fraction of the rise visible drawn for training crops.
    left_crop_probability : chance that a crop also removes part of the history.
    """

    crops: int = 3
    min_fraction: float = 0.2
    left_crop_probability: float = 0.5


@dataclass(eq=False)
class Instances:
    """Cropped, preprocessed instances; per-instance arrays have shape (N,).

    Attributes
    ----------
    x : (P, F) float32, the real steps of every (instance, site), concatenated.
    offsets : (N, S + 1) int64, instance i site s is rows ``offsets[i, s]:offsets[i, s + 1]``.
    lengths : (N, S) int64.
    label : class index into :data:`~model.lensnet.CLASS_NAMES` (0 No, 1 Maybe, 2 Yes).
    star_index : simulated star index.
    fraction : fraction of the rise visible (NaN without a rise window).
    subclass : subclass name per instance.
    n_dropped : crops dropped for lack of data.
    """

    x: F32
    offsets: I64
    lengths: I64
    label: I64
    star_index: I64
    fraction: F64
    subclass: npt.NDArray[np.str_]
    n_dropped: int = 0

    def __len__(self) -> int:
        return len(self.label)

    def item(self, i: int) -> tuple[F32, I64]:
        """Instance ``i`` as ``(x (S, L, F) left-padded, lengths (S,))`` for :func:`collate`."""
        lengths = self.lengths[i]
        length = int(lengths.max())
        out = np.zeros((N_SITES, length, N_FEATURES), dtype=np.float32)
        for s in range(N_SITES):
            n = int(lengths[s])
            if n:
                out[s, length - n :] = self.x[self.offsets[i, s] : self.offsets[i, s + 1]]
        return out, lengths

    def subset(self, index: npt.NDArray[np.int64] | Sequence[int]) -> Instances:
        index = np.asarray(index, dtype=np.int64)
        parts = [self.x[self.offsets[i, 0] : self.offsets[i, -1]] for i in index]
        sizes = self.offsets[index, -1] - self.offsets[index, 0]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        offsets = self.offsets[index] - self.offsets[index, :1] + starts[:, None]
        x = np.concatenate(parts) if parts else np.zeros((0, N_FEATURES), np.float32)
        return Instances(
            x=x,
            offsets=offsets,
            lengths=self.lengths[index],
            label=self.label[index],
            star_index=self.star_index[index],
            fraction=self.fraction[index],
            subclass=self.subclass[index],
            n_dropped=self.n_dropped,
        )


def split_indices(n_stars: int, seed: int) -> dict[Split, I64]:
    """Star indices of each split, disjoint, deterministic from ``seed`` and ``n_stars``."""
    order = np.random.default_rng([seed, 7]).permutation(n_stars)
    n_train = round(SPLIT_FRACTIONS[0] * n_stars)
    n_val = round(SPLIT_FRACTIONS[1] * n_stars)
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val :]),
    }


def crop_window(
    rng: np.random.Generator,
    label: Label,
    t_first: float,
    t_last: float,
    crop: CropConfig,
    fraction: float | None = None,
    left_crop: bool | None = None,
) -> tuple[float, float, float]:
    """``(start, as_of, fraction)`` of one crop; full HJD; fraction NaN without a rise.

    ``fraction`` and ``left_crop`` force the visible fraction and the left crop (evaluation).
    """
    rises = np.isfinite(label.t_rise_start) and label.t_peak > label.t_rise_start
    if rises:
        f = rng.uniform(crop.min_fraction, 1.0) if fraction is None else fraction
        as_of = label.t_rise_start + f * (label.t_peak - label.t_rise_start)
        anchor = label.t_rise_start
    else:
        f = float("nan")
        low = min(t_first + MIN_HISTORY_DAYS, t_last)
        as_of = rng.uniform(low, t_last) if fraction is None else t_last
        anchor = as_of
    do_left = rng.uniform() < crop.left_crop_probability if left_crop is None else left_crop
    start = -np.inf
    if do_left and anchor - MIN_HISTORY_DAYS > t_first:
        start = rng.uniform(t_first, anchor - MIN_HISTORY_DAYS)
    return float(start), float(as_of), float(f)


def build_instances(
    config: SimulationConfig,
    star_indices: Sequence[int] | I64,
    crop: CropConfig,
    *,
    seed: int,
    fraction: float | None = None,
    left_crop: bool | None = None,
    progress: bool = False,
    max_length: int = MAX_LENGTH,
) -> Instances:
    """Simulate the stars and cut their instances (``crop.crops`` per star, or one when
    ``fraction`` is given: the visible fraction for every rising star, no randomness in it).
    ``max_length`` below 1500 is for fast tests only."""
    rows: list[F32] = []
    offsets: list[list[int]] = []
    lengths: list[I64] = []
    labels: list[int] = []
    stars: list[int] = []
    fractions: list[float] = []
    subclasses: list[str] = []
    n_rows = 0
    n_dropped = 0
    n_crops = crop.crops if fraction is None else 1
    for index in tqdm(star_indices, desc="instances", disable=not progress, leave=False):
        star, label = simulate_star(config, int(index))
        rng = np.random.default_rng([seed, 101, int(index)])
        hjd = np.concatenate([d.hjd[d.band == 0] for d in star.datasets] + [np.zeros(0)])
        if len(hjd) == 0:
            n_dropped += n_crops
            continue
        t_first, t_last = float(hjd.min()), float(hjd.max())
        for _ in range(n_crops):
            start, as_of, f = crop_window(rng, label, t_first, t_last, crop, fraction, left_crop)
            try:
                candidate = prepare(star, as_of=as_of, start=start, max_length=max_length)
            except InsufficientDataError:
                n_dropped += 1
                continue
            site_offsets = [n_rows]
            for s in range(N_SITES):
                n = int(candidate.lengths[s])
                if n:
                    rows.append(candidate.x[s, candidate.x.shape[1] - n :])
                n_rows += n
                site_offsets.append(n_rows)
            offsets.append(site_offsets)
            lengths.append(candidate.lengths)
            labels.append(CLASS_NAMES.index(label.label))
            stars.append(int(index))
            fractions.append(f)
            subclasses.append(label.subclass)
    return Instances(
        x=np.concatenate(rows) if rows else np.zeros((0, N_FEATURES), np.float32),
        offsets=np.asarray(offsets, dtype=np.int64).reshape(-1, N_SITES + 1),
        lengths=np.asarray(lengths, dtype=np.int64).reshape(-1, N_SITES),
        label=np.asarray(labels, dtype=np.int64),
        star_index=np.asarray(stars, dtype=np.int64),
        fraction=np.asarray(fractions, dtype=np.float64),
        subclass=np.asarray(subclasses, dtype=np.str_),
        n_dropped=n_dropped,
    )


#: Where built training arrays are cached unless the CLI's ``--cache-dir`` says otherwise.
DEFAULT_CACHE_DIR: Final = Path.home() / ".cache" / "lensnet"


def load_split(
    config: SimulationConfig,
    split: Split,
    crop: CropConfig,
    *,
    fraction: float | None = None,
    left_crop: bool | None = None,
    cache: Path | None = None,
    progress: bool = False,
) -> Instances:
    """The instances of one split, built or read from the ``.npz`` cache (``cache=None``: none).

    The cache key hashes everything the instances depend on (simulator config, crops, split,
    forced fraction, :data:`RECIPE_VERSION`).
    """
    key = json.dumps(
        [asdict(config), asdict(crop), split, fraction, left_crop, RECIPE_VERSION],
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = None if cache is None else cache / f"instances-{split}-{digest}.npz"
    if path is not None and path.exists():
        with np.load(path) as data:
            return Instances(
                x=data["x"],
                offsets=data["offsets"],
                lengths=data["lengths"],
                label=data["label"],
                star_index=data["star_index"],
                fraction=data["fraction"],
                subclass=data["subclass"],
                n_dropped=int(data["n_dropped"]),
            )
    indices = split_indices(config.n_stars, config.seed)[split]
    instances = build_instances(
        config,
        indices,
        crop,
        seed=config.seed,
        fraction=fraction,
        left_crop=left_crop,
        progress=progress,
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            x=instances.x,
            offsets=instances.offsets,
            lengths=instances.lengths,
            label=instances.label,
            star_index=instances.star_index,
            fraction=instances.fraction,
            subclass=instances.subclass,
            n_dropped=np.int64(instances.n_dropped),
        )
        tmp.replace(path)
    return instances


def class_weights(labels: I64, n_classes: int = len(CLASS_NAMES)) -> F64:
    """(n_classes,) inverse-frequency weights, mean 1 over the instances (paper §7)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
