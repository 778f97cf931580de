"""Stage: vet AlertFinder candidates before LensNet (paper §3.3).

Difference imaging spreads a varying bright star's signal into its neighbours' light curves,
so real events are isolated while "ghost" candidates come in clusters. Per evaluation window
(one consumed batch), in this order:

1. ``cluster``: a candidate with at least ``cluster_min_neighbours`` other candidates within
   ``cluster_radius_px`` pixels on the same field and chip is dropped (the paper says "many
   neighbouring candidates" without numbers; 5 within 20 px, i.e. ~8 arcsec at KMTNet's
   0.4 arcsec/px, is our default).
2. ``cap_field`` / ``cap_chip``: of the rest, at most ``max_per_field`` per field and
   ``max_per_chip`` per chip are kept, lowest star ids first (the paper: 20 000 and 800; its
   ids sort CTIO-detected stars first).

Candidates with unknown chip or position are never clustered (nothing to compare) but count
towards the caps under chip -1. :func:`vet` is pure numpy on the candidates' columns;
:func:`vet_triggered` reads those columns from the stores for the triggered stars of every
partition of a window. No Kafka, no logging.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from consumer.pipeline.trigger import Triggered
from consumer.settings import VettingSettings
from consumer.state.store import StarStore

KEPT: Final = ""
REASONS: Final = ("cluster", "cap_field", "cap_chip")


@dataclass(frozen=True, eq=False)
class VettingResult:
    """Per candidate (input order): kept or not, and the reason ("" when kept)."""

    keep: npt.NDArray[np.bool_]  # (C,)
    reason: npt.NDArray[np.str_]  # (C,)
    neighbours: npt.NDArray[np.int64]  # (C,) other candidates within the radius

    def counts(self) -> dict[str, int]:
        """Dropped candidates per reason."""
        return {r: int((self.reason == r).sum()) for r in REASONS if (self.reason == r).any()}


def vet(
    star_id: npt.ArrayLike,
    field: npt.ArrayLike,
    chip: npt.ArrayLike,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    settings: VettingSettings,
) -> VettingResult:
    """Vet C candidates; every argument has shape (C,) (x, y in pixels; NaN when unknown)."""
    ids = np.asarray(star_id, dtype=np.int64)
    fields = np.asarray(field, dtype=np.int64)
    chips = np.asarray(chip, dtype=np.int64)
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    n = len(ids)
    reason = np.full(n, KEPT, dtype="<U9")
    neighbours = np.zeros(n, dtype=np.int64)
    located = (chips >= 0) & np.isfinite(xs) & np.isfinite(ys)
    radius2 = settings.cluster_radius_px**2
    groups = np.unique(np.stack([fields[located], chips[located]], axis=1), axis=0)
    for group_field, group_chip in groups:
        members = np.flatnonzero(located & (fields == group_field) & (chips == group_chip))
        if len(members) <= settings.cluster_min_neighbours:
            continue
        neighbours[members] = _neighbour_counts(xs[members], ys[members], radius2)
    reason[neighbours >= settings.cluster_min_neighbours] = "cluster"

    survivors = np.flatnonzero(reason == KEPT)
    order = survivors[np.argsort(ids[survivors], kind="stable")]
    _cap(order, fields[order], settings.max_per_field, "cap_field", reason)
    order = order[reason[order] == KEPT]
    chip_key = fields[order] * 16 + chips[order]
    _cap(order, chip_key, settings.max_per_chip, "cap_chip", reason)
    return VettingResult(keep=reason == KEPT, reason=reason, neighbours=neighbours)


def vet_triggered(
    rising: Mapping[int, Triggered], stores: Mapping[int, StarStore], settings: VettingSettings
) -> tuple[dict[int, npt.NDArray[np.bool_]], dict[str, int]]:
    """Vet the triggered stars of every partition of ``rising`` together, with their
    positions as the ``stores`` hold them now.

    Returns
    -------
    keep : partition -> (R,) bool over ``rising[partition].star_ids``: False for a triggered
        star vetting dropped (True for the others, triggered or not).
    dropped : candidates dropped per reason.
    """
    keep = {p: np.ones(len(r.star_ids), dtype=bool) for p, r in rising.items()}
    triggered = {p: np.flatnonzero(r.triggered) for p, r in rising.items()}
    if not any(len(index) for index in triggered.values()):
        return keep, {}
    verdict = _vet_stars({p: rising[p].star_ids[i] for p, i in triggered.items()}, stores, settings)
    start = 0
    for partition, index in triggered.items():
        keep[partition][index] = verdict.keep[start : start + len(index)]
        start += len(index)
    return keep, verdict.counts()


def could_drop(
    candidates: Mapping[int, npt.NDArray[np.int64]],
    stores: Mapping[int, StarStore],
    settings: VettingSettings,
) -> bool:
    """Whether vetting could drop a star of some subset of ``candidates`` (partition -> star
    ids), whichever of them trigger. False when it drops none of the whole set: a subset has
    no more neighbours within the radius and no more stars per field or chip than the whole."""
    if not any(len(ids) for ids in candidates.values()):
        return False
    return not bool(_vet_stars(candidates, stores, settings).keep.all())


def _vet_stars(
    star_ids: Mapping[int, npt.NDArray[np.int64]],
    stores: Mapping[int, StarStore],
    settings: VettingSettings,
) -> VettingResult:
    """:func:`vet` on the given stars of every partition (partition order, then ``star_ids``
    order), with their positions as the stores hold them now."""
    columns: dict[str, list[npt.NDArray[Any]]] = defaultdict(list)
    for partition, ids in star_ids.items():
        stars = stores[partition].stars
        rows = stars.rows(ids)
        columns["star_id"].append(ids)
        columns["field"].append(stars.fields[rows, 0])
        columns["chip"].append(stars.chip[rows])
        columns["x"].append(stars.x[rows])
        columns["y"].append(stars.y[rows])
    joined = {name: np.concatenate(parts) for name, parts in columns.items()}
    return vet(
        joined["star_id"], joined["field"], joined["chip"], joined["x"], joined["y"], settings
    )


def _neighbour_counts(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], radius2: float
) -> npt.NDArray[np.int64]:
    """Other points within the radius, by sorting on x and scanning the window (O(C log C +
    pairs within the radius in x))."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    radius = np.sqrt(radius2)
    lo = np.searchsorted(xs, xs - radius, side="left")
    hi = np.searchsorted(xs, xs + radius, side="right")
    counts = np.zeros(len(xs), dtype=np.int64)
    for i in range(len(xs)):
        dx = xs[lo[i] : hi[i]] - xs[i]
        dy = ys[lo[i] : hi[i]] - ys[i]
        counts[i] = int(np.count_nonzero(dx * dx + dy * dy <= radius2)) - 1
    out = np.empty_like(counts)
    out[order] = counts
    return out


def _cap(
    order: npt.NDArray[np.int64],
    key: npt.NDArray[np.int64],
    limit: int,
    name: str,
    reason: npt.NDArray[np.str_],
) -> None:
    """Mark all but the first ``limit`` of each key (in ``order``) with ``name``."""
    if len(order) <= limit:
        return
    _, inverse = np.unique(key, return_inverse=True)
    rank = np.zeros(len(order), dtype=np.int64)
    seen: dict[int, int] = {}
    for position, group in enumerate(inverse.tolist()):
        rank[position] = seen.get(group, 0)
        seen[group] = rank[position] + 1
    reason[order[rank >= limit]] = name
