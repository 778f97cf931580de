"""When the daemon would trigger on a star and score it with LensNet: its timeline, offline.

The daemon (``lensnet run``) evaluates a star when an ``evaluation_days`` window (aligned on
HJD multiples) in which the star received observations closes: the AlertFinder's rising test
against cached per-dataset medians, the broken-line fit on the stars that pass, then LensNet on
a triggered star unless it was scored, and rejected, less than ``rescore_days`` of data ago.
This module replays that schedule for stars held in memory with the same trigger code
(:func:`consumer.alertfinder.api.rising_batch` then
:func:`~consumer.alertfinder.api.evaluate_batch`,
one compiled call each per chunk of stars, every (star, window) pair a cut-off into the same
arrays) and the same median cache rule (a dataset's median is recomputed once more than
``refresh_fraction`` of its points are new). Training crops and the evaluation so see
candidates when, and only when, the daemon would.

Because a rejected star is rescored on the same schedule whatever it scored, the times at which
LensNet is called do not depend on the model or the threshold, and the first score at or above
a threshold ``T`` is exactly when a daemon with ``alert_threshold = T`` alerts. Not replayed:
vetting (clusters of neighbouring candidates and per-field/per-chip caps; a simulated season
has no neighbours), the refresh of cached medians by a full evaluation, and the store's
1500-point capacity counted per site across two fields (here per dataset).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import numba
import numpy as np
import numpy.typing as npt

from consumer.alertfinder.api import (
    HIGH_CADENCE,
    LOW_CADENCE,
    TriggerRule,
    evaluate_batch,
    rising_batch,
)
from consumer.alertfinder.kernels import baseline_count
from consumer.constants import HIGH_CADENCE_FIELDS
from consumer.seasons.archive import Star
from model.features import MAX_LENGTH, valid_mask

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

#: The daemon's defaults (``TriggerSettings`` and ``ModelSettings``).
EVALUATION_DAYS: Final = 0.25
RESCORE_DAYS: Final = 1.0
REFRESH_FRACTION: Final = 0.1
_I_BAND: Final = 0


@dataclass(frozen=True)
class Cadence:
    """How the daemon evaluates: window length and rescore delay (days), trigger rules by field
    cadence, median cache refresh, points held per dataset."""

    evaluation_days: float = EVALUATION_DAYS
    rescore_days: float = RESCORE_DAYS
    high_cadence_fields: tuple[int, ...] = HIGH_CADENCE_FIELDS
    high_cadence: TriggerRule = HIGH_CADENCE
    low_cadence: TriggerRule = LOW_CADENCE
    refresh_fraction: float = REFRESH_FRACTION
    capacity: int = MAX_LENGTH

    def rule_for(self, fields: Sequence[int]) -> TriggerRule:
        """High cadence when any of the star's datasets is in a high-cadence field."""
        high = any(f in self.high_cadence_fields for f in fields)
        return self.high_cadence if high else self.low_cadence

    def with_rules(self, high: TriggerRule | None, low: TriggerRule | None) -> Cadence:
        """This cadence with the trigger rules replaced where given."""
        return replace(
            self,
            high_cadence=self.high_cadence if high is None else high,
            low_cadence=self.low_cadence if low is None else low,
        )

    def describe(self) -> str:
        """The trigger rules in words, e.g. ``high cadence 5/5@3:250, low cadence 10/10@3:400``
        (``k/n@n_sigma:dchi2_min[~average][^part]``)."""
        return f"high cadence {self.high_cadence}, low cadence {self.low_cadence}"


#: The daemon's default settings.
DEFAULT_CADENCE: Final = Cadence()


def card_cadence(card: Mapping[str, Any]) -> Cadence:
    """The schedule a LensNet artifact was trained on, from its model card
    (``training.config.cadence``); :data:`DEFAULT_CADENCE` for cards written before training
    recorded it, which all used the defaults. Serving a model with other trigger rules shows
    it calls it was never trained on (earlier, fainter rises: see ``model/README.md``)."""
    entry = card.get("training", {}).get("config", {}).get("cadence")
    if not isinstance(entry, Mapping):
        return DEFAULT_CADENCE
    return Cadence(
        evaluation_days=float(entry["evaluation_days"]),
        rescore_days=float(entry["rescore_days"]),
        high_cadence_fields=tuple(int(f) for f in entry["high_cadence_fields"]),
        high_cadence=TriggerRule(**entry["high_cadence"]),
        low_cadence=TriggerRule(**entry["low_cadence"]),
        refresh_fraction=float(entry["refresh_fraction"]),
        capacity=int(entry["capacity"]),
    )


@dataclass(frozen=True, eq=False)
class Timeline:
    """One star's evaluations; per-window arrays have shape (W,).

    Attributes
    ----------
    star_id : the star.
    rule : the trigger rule its fields give it.
    window_end : full HJD at which each window with new I-band data closed.
    t_last : newest observation at each window's close (full HJD).
    passed : the rising test passed at that window (the broken-line fit then decides).
    scored : (C,) ``t_last`` of each LensNet call (full HJD): the first window that triggers,
        then the first window that triggers at least ``rescore_days`` of data after the
        previous call, and so on. The fit is only run where it can change this list.
    """

    star_id: int
    rule: TriggerRule
    window_end: F64
    t_last: F64
    passed: Bools
    scored: F64

    @property
    def first_trigger(self) -> float:
        """``t_last`` of the first window that triggers (NaN when none does)."""
        return float(self.scored[0]) if len(self.scored) else math.nan


@dataclass(frozen=True, eq=False)
class _Prepared:
    """A star's cleaned I-band datasets concatenated, and its cut-offs at each window."""

    star_id: int
    rule: TriggerRule
    t: F64
    flux: F64
    flux_err: F64
    base: I64  # (D,) first point of each dataset in t
    window_end: F64  # (W,)
    t_last: F64  # (W,)
    start: I64  # (W, D) first point held, local to the dataset
    end: I64  # (W, D) one past the last point before the window's close
    median: F64  # (W, D) cached median (NaN while empty)


def timelines(stars: Sequence[Star], cadence: Cadence = DEFAULT_CADENCE) -> list[Timeline]:
    """The daemon's timeline of each star (same order); empty for stars without I-band data."""
    prepared = [_prepare(star, cadence) for star in stars]
    passed = _rising(prepared)
    scored = _schedule(prepared, passed, cadence.rescore_days)
    return [
        Timeline(
            star_id=item.star_id,
            rule=item.rule,
            window_end=item.window_end,
            t_last=item.t_last,
            passed=hits,
            scored=np.asarray(times, dtype=np.float64),
        )
        for item, hits, times in zip(prepared, passed, scored, strict=True)
    ]


def _prepare(star: Star, cadence: Cadence) -> _Prepared:
    parts = []
    for dataset in star.datasets:
        keep = valid_mask(dataset) & (dataset.band == _I_BAND)
        if keep.any():
            order = np.argsort(dataset.hjd[keep], kind="stable")
            parts.append(
                (
                    dataset.field,
                    np.asarray(dataset.hjd[keep][order], dtype=np.float64),
                    np.asarray(dataset.flux[keep][order], dtype=np.float64),
                    np.asarray(dataset.flux_err[keep][order], dtype=np.float64),
                )
            )
    rule = cadence.rule_for([p[0] for p in parts])
    if not parts:
        empty = np.zeros(0)
        none = np.zeros((0, 0), dtype=np.int64)
        return _Prepared(
            star.star_id, rule, empty, empty, empty, np.zeros(0, np.int64), empty, empty,
            none, none, np.zeros((0, 0)),
        )  # fmt: skip
    t = np.concatenate([p[1] for p in parts])
    windows = np.unique(np.floor(t / cadence.evaluation_days))
    window_end = (windows + 1.0) * cadence.evaluation_days
    sizes = [len(p[1]) for p in parts]
    base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    end = np.stack([np.searchsorted(p[1], window_end, side="left") for p in parts], axis=1)
    start = np.maximum(end - cadence.capacity, 0)
    flux = np.concatenate([p[2] for p in parts])
    median = np.stack(
        [
            _cached_medians(
                p[2], start[:, d], end[:, d], cadence.refresh_fraction, rule.baseline_part
            )
            for d, p in enumerate(parts)
        ],
        axis=1,
    )
    last = np.stack(
        [
            np.where(end[:, d] > 0, p[1][np.maximum(end[:, d] - 1, 0)], -np.inf)
            for d, p in enumerate(parts)
        ],
        axis=1,
    ).max(axis=1)
    return _Prepared(
        star_id=star.star_id,
        rule=rule,
        t=t,
        flux=flux,
        flux_err=np.concatenate([p[3] for p in parts]),
        base=base,
        window_end=window_end,
        t_last=last,
        start=start.astype(np.int64),
        end=end.astype(np.int64),
        median=median,
    )


@numba.njit(cache=True)
def _cached_medians(
    flux: F64, start: I64, end: I64, fraction: float, part: int
) -> F64:  # pragma: no cover
    """Median of ``flux[start[w]:end[w]]`` per window (of its oldest ``ceil(n / part)``
    points), recomputed only once more than ``fraction`` of the points held at the last
    computation are new (the daemon's cache)."""
    out = np.full(len(end), np.nan)
    held = 0
    computed_at = -1
    value = np.nan
    for w in range(len(end)):
        n = end[w] - start[w]
        if n == 0:
            continue
        if computed_at < 0 or end[w] - computed_at > fraction * held:
            value = np.median(flux[start[w] : start[w] + baseline_count(n, part)])
            held = n
            computed_at = end[w]
        out[w] = value
    return out


def _cuts(items: Sequence[_Prepared], rows: Sequence[I64], *, tail: bool) -> tuple[F64, ...]:
    """CSR arrays of the chosen (star, window) pairs: every dataset cut at the window (its
    last ``n + average - 1`` points when ``tail``), as ``(t, flux, flux_err, dataset_offsets,
    star_offsets, baseline)``."""
    first_parts, lengths_parts, baseline_parts, datasets_per_pair = [], [], [], []
    offset = 0
    for item, windows in zip(items, rows, strict=True):
        if len(windows) == 0:
            offset += len(item.t)
            continue
        end = item.end[windows]  # (P, D)
        start = item.start[windows]
        if tail:  # the points the rising test reads
            start = np.maximum(start, end - item.rule.span)
        lengths = (end - start).ravel()
        first_parts.append((start + item.base).ravel() + offset)
        lengths_parts.append(lengths)
        baseline_parts.append(np.nan_to_num(item.median[windows].ravel(), nan=0.0))
        datasets_per_pair.append(np.full(len(windows), end.shape[1], dtype=np.int64))
        offset += len(item.t)
    if not lengths_parts:
        z = np.zeros(0)
        return z, z, z, np.zeros(1, np.int64), np.zeros(1, np.int64), z
    lengths = np.concatenate(lengths_parts)
    first = np.concatenate(first_parts)
    dataset_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    index = np.repeat(first - dataset_offsets[:-1], lengths) + np.arange(int(dataset_offsets[-1]))
    t = np.concatenate([item.t for item in items])
    flux = np.concatenate([item.flux for item in items])
    flux_err = np.concatenate([item.flux_err for item in items])
    star_offsets = np.concatenate([[0], np.cumsum(np.concatenate(datasets_per_pair))]).astype(
        np.int64
    )
    return (
        t[index],
        flux[index],
        flux_err[index],
        dataset_offsets,  # type: ignore[return-value]
        star_offsets,
        np.concatenate(baseline_parts),
    )


def _rule_arrays(
    items: Sequence[_Prepared], rows: Sequence[I64]
) -> dict[str, npt.NDArray[np.generic]]:
    rules = [item.rule for item, w in zip(items, rows, strict=True) for _ in range(len(w))]
    return {
        "k": np.array([r.k for r in rules], dtype=np.int64),
        "n": np.array([r.n for r in rules], dtype=np.int64),
        "n_sigma": np.array([r.n_sigma for r in rules], dtype=np.float64),
        "average": np.array([r.average for r in rules], dtype=np.int64),
        "baseline_part": np.array([r.baseline_part for r in rules], dtype=np.int64),
    }


def _rising(items: Sequence[_Prepared]) -> list[Bools]:
    """Per star, (W,) passes of the rising test against the cached medians."""
    rows = [np.arange(len(item.window_end)) for item in items]
    t, flux, flux_err, dataset_offsets, star_offsets, baseline = _cuts(items, rows, tail=True)
    rule = _rule_arrays(items, rows)
    if len(star_offsets) == 1:
        return [np.zeros(0, dtype=bool) for _ in items]
    result = rising_batch(
        t, flux, flux_err, dataset_offsets, star_offsets, baseline=baseline, check=False, **rule
    )
    bounds = np.cumsum([0] + [len(r) for r in rows])
    return [result.passed[a:b] for a, b in itertools.pairwise(bounds.tolist())]


def _schedule(
    items: Sequence[_Prepared], passed: Sequence[Bools], rescore_days: float
) -> list[list[float]]:
    """Per star, the ``t_last`` of each LensNet call. In rounds: every star still pending offers
    its next passing window that the rescore delay allows, and one compiled fit decides them
    all; a trigger is a call and moves the star past the delay, a miss to its next window."""
    candidates = [np.flatnonzero(hits) for hits in passed]
    position = [0] * len(items)
    scored: list[list[float]] = [[] for _ in items]
    pending = [i for i, c in enumerate(candidates) if len(c)]
    while pending:
        chosen = [items[i] for i in pending]
        rows = [candidates[i][position[i] : position[i] + 1] for i in pending]
        triggered = _fit(chosen, rows)
        still = []
        for i, hit in zip(pending, triggered.tolist(), strict=True):
            windows = candidates[i]
            t_last = items[i].t_last
            if hit:
                scored[i].append(float(t_last[windows[position[i]]]))
                later = np.searchsorted(t_last[windows], scored[i][-1] + rescore_days, "left")
                position[i] = max(int(later), position[i] + 1)
            else:
                position[i] += 1
            if position[i] < len(windows):
                still.append(i)
        pending = still
    return scored


def _fit(items: Sequence[_Prepared], rows: Sequence[I64]) -> Bools:
    """(P,) the full trigger (fit on the whole held data) at the chosen (star, window) pairs."""
    t, flux, flux_err, dataset_offsets, star_offsets, _ = _cuts(items, rows, tail=False)
    dchi2_min = np.array(
        [item.rule.dchi2_min for item, w in zip(items, rows, strict=True) for _ in range(len(w))]
    )
    result = evaluate_batch(
        t,
        flux,
        flux_err,
        dataset_offsets,
        star_offsets,
        dchi2_min=dchi2_min,
        check=False,
        **_rule_arrays(items, rows),
    )
    return np.asarray(result.triggered, dtype=bool)
