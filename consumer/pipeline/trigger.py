"""Stage: the AlertFinder on every star a batch changed, in two compiled calls.

1. **Rising test** (:func:`consumer.alertfinder.api.rising_batch`) on the latest
   ``n + average - 1`` points of each dataset of every changed star (``n`` with the published
   rule, ``average = 1``), against each dataset's *cached* median flux (the
   store's ``baseline`` annotation). Medians over whole buffers are most of the cost of the
   test, and they move slowly, so a star's medians are recomputed (one compiled call for all
   stale stars) only when it has none yet, a dataset has none (a site or field appeared), or
   more than ``baseline_refresh_fraction`` of its held points arrived since.
2. **Broken-line fit** (:func:`consumer.alertfinder.api.evaluate_batch`) on the whole buffers of
   the stars that pass; it returns exact medians, which refresh the cache.

The rule of a star follows its fields' cadence: a star with a dataset in any of
``high_cadence_fields`` gets ``high_cadence``, others ``low_cadence``. The stage reads and
writes only the store; no Kafka, no logging.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from consumer.alertfinder.api import (
    TriggerBatchResult,
    TriggerResult,
    TriggerRule,
    evaluate_arrays,
    rising_arrays,
)
from consumer.constants import SITES
from consumer.settings import RuleSettings, TriggerSettings
from consumer.state.store import StarStore, TriggerInput
from model.timeline import card_cadence

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Triggered:
    """The stars of one evaluation that passed the rising test, and the full verdict on them.

    ``input`` is the CSR input the verdict was computed on (whole buffers), so that dataset
    ``j`` of star ``i`` is site ``input.dataset_site[input.star_offsets[i] + j]``.
    """

    star_ids: IntArray  # (R,) passed the rising test
    result: TriggerBatchResult  # (R,)
    input: TriggerInput
    rules: tuple[TriggerRule, ...]  # (R,)

    @property
    def triggered(self) -> npt.NDArray[np.bool_]:
        return self.result.triggered

    def summary(self, index: int) -> tuple[TriggerResult, tuple[str, ...], tuple[int, ...]]:
        """Star ``index``'s verdict, and the sites and fields of its reported combination."""
        verdict = self.result.star(index)
        first = int(self.input.star_offsets[index])
        sites = tuple(SITES[int(self.input.dataset_site[first + j])] for j in verdict.datasets)
        fields = tuple(int(self.input.dataset_field[first + j]) for j in verdict.datasets)
        return verdict, sites, fields


@dataclass(frozen=True, eq=False)
class RisingOutcome:
    """What the rising test of one evaluation did: stars tested, baselines refreshed, and the
    ids of those that passed (sorted)."""

    evaluated: int
    refreshed: int
    passers: IntArray


@dataclass(frozen=True, eq=False)
class TriggerOutcome:
    """What one evaluation did: stars evaluated, baselines refreshed, and the passers."""

    evaluated: int
    refreshed: int
    rising: Triggered


class TriggerStage:
    """Runs the AlertFinder on changed stars of one :class:`StarStore`."""

    def __init__(self, settings: TriggerSettings) -> None:
        self.settings = settings
        # Field tag (int16, as uint16) -> high cadence; tags outside int16 never occur.
        self._high_fields = np.zeros(1 << 16, dtype=np.bool_)
        tags = [f for f in settings.high_cadence_fields if -(1 << 15) <= f < 1 << 15]
        self._high_fields[np.array(tags, dtype=np.int16).view(np.uint16)] = True
        self._high = _rule(settings.high_cadence)
        self._low = _rule(settings.low_cadence)
        self._last = max(self._high.span, self._low.span)

    def rule_for(self, dataset_field: npt.ArrayLike, star_offsets: IntArray) -> list[TriggerRule]:
        """The rule of each star of CSR input: high cadence if any dataset's field is."""
        high = self._high_stars(dataset_field, star_offsets)
        return [self._high if flag else self._low for flag in high.tolist()]

    def _high_stars(
        self, dataset_field: npt.ArrayLike, star_offsets: IntArray
    ) -> npt.NDArray[np.bool_]:
        """(S,) whether each star of CSR input has a dataset in a high-cadence field."""
        high = self._high_fields[np.asarray(dataset_field, dtype=np.int16).view(np.uint16)]
        cumulative = np.concatenate([[0], np.cumsum(high, dtype=np.int64)])
        return np.asarray(cumulative[star_offsets[1:]] - cumulative[star_offsets[:-1]] > 0)

    def _rule_columns(
        self, high: npt.NDArray[np.bool_]
    ) -> tuple[IntArray, IntArray, FloatArray, FloatArray, IntArray, IntArray]:
        """(S,) k, n (int64), n_sigma, dchi2_min (float64), average, baseline_part (int64) of
        each star: the high-cadence rule where ``high``, the low-cadence one elsewhere (the
        kernels' rule arrays)."""
        fast, slow = self._high, self._low
        return (
            np.where(high, fast.k, slow.k).astype(np.int64),
            np.where(high, fast.n, slow.n).astype(np.int64),
            np.where(high, float(fast.n_sigma), float(slow.n_sigma)),
            np.where(high, float(fast.dchi2_min), float(slow.dchi2_min)),
            np.where(high, fast.average, slow.average).astype(np.int64),
            np.where(high, fast.baseline_part, slow.baseline_part).astype(np.int64),
        )

    def _baseline_parts(self, store: StarStore, star_ids: IntArray) -> IntArray:
        """(S,) the rule's ``baseline_part`` of each held star, from its field tags (-1: none).
        The fit takes a star's rule from the fields of the datasets it holds instead; the two
        differ only for a star whose high-cadence points all left its buffers, and matter only
        when the two rules' ``baseline_part`` differ (the cached median is then refreshed by
        the next fit)."""
        fast, slow = self._high.baseline_part, self._low.baseline_part
        if fast == slow:
            return np.full(len(star_ids), fast, dtype=np.int64)
        tags = store.field_tags(star_ids)
        high = (self._high_fields[tags.astype(np.int16).view(np.uint16)] & (tags >= 0)).any(axis=1)
        return np.where(high, fast, slow).astype(np.int64)

    def run(self, store: StarStore, star_ids: npt.ArrayLike) -> TriggerOutcome:
        """Rising test on ``star_ids`` (stars of ``store``), full fit on the passers."""
        tested = self.rising(store, star_ids)
        return TriggerOutcome(
            evaluated=tested.evaluated,
            refreshed=tested.refreshed,
            rising=self.evaluate(store, tested.passers),
        )

    def rising(self, store: StarStore, star_ids: npt.ArrayLike) -> RisingOutcome:
        """Rising test on ``star_ids`` (stars of ``store``) against the cached medians, those
        that are stale refreshed first (one compiled pass over the buffers, one for the test)."""
        ids = np.unique(np.asarray(star_ids, dtype=np.int64))
        tail, baseline, refreshed = store.rising_input(
            ids,
            self._last,
            self.settings.baseline_refresh_fraction,
            baseline_part=self._baseline_parts(store, ids),
        )
        k, n, n_sigma, _, average, _ = self._rule_columns(
            self._high_stars(tail.dataset_field, tail.star_offsets)
        )
        rising = rising_arrays(  # the store's kernel built the input: nothing to check
            tail.t,
            tail.flux,
            tail.flux_err,
            tail.dataset_offsets,
            tail.star_offsets,
            k,
            n,
            n_sigma,
            average,
            baseline,
        )
        return RisingOutcome(evaluated=len(ids), refreshed=refreshed, passers=ids[rising.passed])

    def evaluate(self, store: StarStore, star_ids: IntArray) -> Triggered:
        """The full AlertFinder on the whole buffers of ``star_ids``; refreshes their medians."""
        full = store.to_trigger_arrays(star_ids)
        high = self._high_stars(full.dataset_field, full.star_offsets)
        rules = [self._high if flag else self._low for flag in high.tolist()]
        k, n, n_sigma, dchi2_min, average, baseline_part = self._rule_columns(high)
        result = evaluate_arrays(  # the store's kernel built the input: nothing to check
            full.t,
            full.flux,
            full.flux_err,
            full.dataset_offsets,
            full.star_offsets,
            k=k,
            n=n,
            n_sigma=n_sigma,
            dchi2_min=dchi2_min,
            average=average,
            baseline_part=baseline_part,
        )
        _store_baselines(store, full, result.baseline)
        return Triggered(star_ids=star_ids, result=result, input=full, rules=tuple(rules))

    def refresh(self, store: StarStore, star_ids: IntArray) -> None:
        """Recompute the cached medians of ``star_ids`` (sorted, unique) from their whole
        buffers: what :meth:`evaluate` leaves in the cache, without the fit."""
        if len(star_ids):
            parts = self._baseline_parts(store, star_ids)
            store.rising_input(star_ids, 0, 0.0, force=True, baseline_part=parts)


def untrained_rules(settings: TriggerSettings, card: Mapping[str, Any]) -> dict[str, str]:
    """Where the daemon's trigger differs from the one LensNet was trained on (its model card,
    :func:`model.timeline.card_cadence`): ``{"high_cadence": "5/5@3:250 (trained on
    4/5@2.5:150)"}``; empty when they agree. A model sees its training calls only when the
    daemon triggers as training did: earlier or fainter calls score lower (model/README.md)."""
    trained = card_cadence(card)
    pairs = {
        "high_cadence": (_rule(settings.high_cadence), trained.high_cadence),
        "low_cadence": (_rule(settings.low_cadence), trained.low_cadence),
    }
    return {
        name: f"{served} (trained on {rule})"
        for name, (served, rule) in pairs.items()
        if served != rule
    }


def _rule(settings: RuleSettings) -> TriggerRule:
    """The rule of one cadence's settings (the same fields, by name)."""
    return TriggerRule(**settings.model_dump())


def _dataset_index(store: StarStore, data: TriggerInput) -> tuple[IntArray, IntArray]:
    """For each dataset: the position of its star in ``data.star_ids`` and which of the star's
    two field tags it carries (0 or 1)."""
    star_of = np.repeat(np.arange(len(data.star_ids)), np.diff(data.star_offsets))
    if len(data.star_ids) == 0:
        return star_of, np.zeros(0, dtype=np.int64)
    tags = store.field_tags(data.star_ids)
    second = tags[star_of, 1] == data.dataset_field
    return star_of, second.astype(np.int64)


def _store_baselines(
    store: StarStore, data: TriggerInput, medians: npt.NDArray[np.float64]
) -> None:
    """Write per-dataset medians into the stars' baseline annotation; reset staleness."""
    if len(data.star_ids) == 0:
        return
    star_of, bit = _dataset_index(store, data)
    table = np.full((len(data.star_ids), len(SITES), 2), np.nan, dtype=np.float32)
    table[star_of, data.dataset_site, bit] = medians
    rows = store.stars.rows(data.star_ids)
    store.stars.baseline[rows] = table
    ends = data.dataset_offsets[data.star_offsets]
    store.stars.baseline_points[rows] = np.diff(ends)
    store.stars.fresh_points[rows] = 0
