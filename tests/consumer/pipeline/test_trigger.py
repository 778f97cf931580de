"""The daemon's trigger stage against the AlertFinder run on whole buffers."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from consumer.alertfinder.api import (
    TriggerBatchResult,
    TriggerRule,
    dataset_medians,
    evaluate_batch,
    rising_batch,
)
from consumer.edge.photometry import Observations
from consumer.pipeline.trigger import TriggerStage, untrained_rules
from consumer.settings import LowCadenceRuleSettings, RuleSettings, TriggerSettings
from consumer.state.store import StarStore, StoreConfig, TriggerInput
from model.timeline import DEFAULT_CADENCE

T0 = 2_461_000.0


def light_curves(n_stars: int, epochs: int, rising: set[int], seed: int = 0) -> Observations:
    """Stars 0..n-1, one site; stars in ``rising`` brighten steeply over the last 12 epochs."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_stars, dtype=np.int64), epochs)
    t = np.tile(T0 + np.arange(epochs) * 0.2, n_stars)
    flux = rng.normal(1000.0, 10.0, len(ids))
    late = np.tile(np.arange(epochs) >= epochs - 12, n_stars)
    bump = np.tile(np.clip(np.arange(epochs) - (epochs - 13), 0, None) * 40.0, n_stars)
    flux += np.where(np.isin(ids, list(rising)) & late, bump, 0.0)
    n = len(ids)
    columns: dict[str, Any] = {
        "star_id": ids,
        "field": np.where(ids % 2 == 0, 2, 20),  # even stars high cadence, odd low
        "chip": np.zeros(n),
        "ra": np.zeros(n),
        "dec": np.zeros(n),
        "x": np.zeros(n),
        "y": np.zeros(n),
        "hjd": t,
        "band": np.zeros(n),
        "flux": flux,
        "flux_err": np.full(n, 10.0),
        "sky": np.full(n, 500.0),
        "fwhm": np.full(n, 1.5),
        "airmass": np.full(n, 1.2),
        "psf_quality": np.full(n, 90.0),
    }
    return Observations.from_columns(**columns)


def whole_buffer_rule(full: TriggerInput, rules: list[TriggerRule]) -> TriggerBatchResult:
    """The AlertFinder on whole buffers, each star with its own rule."""
    columns: dict[str, Any] = {
        field.name: [getattr(rule, field.name) for rule in rules]
        for field in dataclasses.fields(TriggerRule)
    }
    return evaluate_batch(
        full.t, full.flux, full.flux_err, full.dataset_offsets, full.star_offsets, **columns
    )


def test_stage_triggers_exactly_what_the_full_alertfinder_does() -> None:
    store = StarStore(StoreConfig())
    rising = {1, 4, 7, 10}
    store.append("CTIO", light_curves(12, 200, rising))
    stage = TriggerStage(TriggerSettings())
    outcome = stage.run(store, np.arange(12))
    assert outcome.evaluated == 12
    assert outcome.refreshed == 12  # first sight: medians computed for every star
    assert set(outcome.rising.star_ids[outcome.rising.triggered].tolist()) == rising
    full = store.to_trigger_arrays(np.arange(12))
    rules = stage.rule_for(full.dataset_field, full.star_offsets)
    assert [r.k for r in rules] == [5 if i % 2 == 0 else 10 for i in range(12)]
    reference = whole_buffer_rule(full, rules)
    passed = set(np.arange(12)[reference.passed_rising].tolist())
    assert set(outcome.rising.star_ids.tolist()) == passed
    position = {s: i for i, s in enumerate(outcome.rising.star_ids.tolist())}
    for star in passed:
        assert outcome.rising.result.dchi2[position[star]] == reference.dchi2[star]


def test_medians_are_cached_and_refreshed_after_ten_percent_new_points() -> None:
    store = StarStore(StoreConfig())
    store.append("SAAO", light_curves(3, 100, set()))
    stage = TriggerStage(TriggerSettings())
    stage.run(store, [0, 1, 2])
    full = store.to_trigger_arrays([0])
    cached = store.stars.baseline[store.stars.row(0), 1, 0]  # SAAO, first field tag
    assert np.isclose(cached, dataset_medians(full.flux, full.dataset_offsets)[0])
    assert stage.run(store, [0, 1, 2]).refreshed == 0
    more = light_curves(3, 112, set(), seed=1).take(
        np.tile(np.arange(100, 112), 3) + np.repeat([0, 112, 224], 12)
    )
    store.append("SAAO", more)
    assert stage.run(store, [0, 1, 2]).refreshed == 3


def reference_rising(
    stage: TriggerStage, store: StarStore, star_ids: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], int]:
    """The rising stage in plain numpy, as it was before the compiled pass: the stale medians
    (none yet, a dataset without one, or > refresh fraction new points) recomputed from the
    whole buffers, then the test on the tails. Returns the passers and the refreshed count."""
    ids = np.unique(star_ids)
    tail = store.to_trigger_arrays(ids, last=10)
    star_of = np.repeat(np.arange(len(ids)), np.diff(tail.star_offsets))
    bit = (store.field_tags(ids)[star_of, 1] == tail.dataset_field).astype(np.int64)
    rows = store.stars.rows(ids)
    per_dataset = store.stars.baseline[rows][star_of, tail.dataset_site, bit].astype(np.float64)
    missing = np.zeros(len(ids), dtype=bool)
    np.logical_or.at(missing, star_of, ~np.isfinite(per_dataset))
    points = store.stars.baseline_points[rows]
    fresh = store.stars.fresh_points[rows]
    stale = missing | (points == 0) | (fresh > 0.1 * points)
    if stale.any():
        full = store.to_trigger_arrays(ids[stale])
        full_of = np.repeat(np.arange(int(stale.sum())), np.diff(full.star_offsets))
        full_bit = store.field_tags(ids[stale])[full_of, 1] == full.dataset_field
        table = np.full((int(stale.sum()), 3, 2), np.nan, dtype=np.float32)
        medians = dataset_medians(full.flux, full.dataset_offsets)
        table[full_of, full.dataset_site, full_bit.astype(np.int64)] = medians
        store.stars.baseline[rows[stale]] = table
        store.stars.baseline_points[rows[stale]] = np.diff(full.dataset_offsets[full.star_offsets])
        store.stars.fresh_points[rows[stale]] = 0
        per_dataset = store.stars.baseline[rows][star_of, tail.dataset_site, bit].astype(np.float64)
    rules = stage.rule_for(tail.dataset_field, tail.star_offsets)
    result = rising_batch(
        tail.t,
        tail.flux,
        tail.flux_err,
        tail.dataset_offsets,
        tail.star_offsets,
        k=[r.k for r in rules],
        n=[r.n for r in rules],
        n_sigma=[r.n_sigma for r in rules],
        baseline=np.nan_to_num(per_dataset, nan=0.0),
    )
    return ids[result.passed], int(stale.sum())


def test_rising_pass_equals_the_numpy_reference_as_buffers_grow() -> None:
    """Stars in one or two fields, three sites, rising or flat, appended in uneven frames and
    out of order: after every frame the compiled pass and the reference pick the same passers
    and leave the same medians (bit for bit), refresh counts and point counts."""
    rng = np.random.default_rng(3)
    stores = (
        StarStore(StoreConfig(capacity_per_site=40)),
        StarStore(StoreConfig(capacity_per_site=40)),
    )
    stage = TriggerStage(TriggerSettings())
    n_stars = 40
    for frame in range(60):
        ids = rng.choice(n_stars, size=int(rng.integers(1, n_stars)), replace=False)
        for site in ("CTIO", "SAAO", "SSO"):
            obs = light_curves(n_stars, 1, set(range(0, n_stars, 3)), seed=frame).take(ids)
            times = (
                T0 + frame * 0.3 + rng.uniform(-0.5, 0.1, len(ids)) + 0.01 * "CSS".index(site[0])
            )
            columns = {f: getattr(obs, f) for f in obs.__dataclass_fields__}
            columns["hjd"] = times
            columns["field"] = np.where(
                (ids % 5 == 0) & (rng.uniform(size=len(ids)) < 0.5), 42, columns["field"]
            )
            columns["flux"] = columns["flux"] + np.where(ids % 3 == 0, 30.0 * frame, 0.0)
            batch = Observations.from_columns(**columns)
            for store in stores:
                store.append(site, batch)
        expected, expected_refreshed = reference_rising(stage, stores[0], ids.astype(np.int64))
        got = stage.rising(stores[1], ids)
        assert got.passers.tolist() == expected.tolist()
        assert got.refreshed == expected_refreshed
        for name in ("baseline", "baseline_points", "fresh_points"):
            a = getattr(stores[0].stars, name)[:n_stars]
            b = getattr(stores[1].stars, name)[:n_stars]
            assert a.tobytes() == b.tobytes(), name


def test_rules_other_than_the_models_training_are_named() -> None:
    trained = dataclasses.asdict(DEFAULT_CADENCE.with_rules(TriggerRule.parse("4/5@2.5:150"), None))
    card = {"training": {"config": {"cadence": trained}}}
    assert untrained_rules(TriggerSettings(), card) == {
        "high_cadence": "5/5@3:250 (trained on 4/5@2.5:150)"
    }
    served = TriggerSettings(high_cadence=RuleSettings(k=4, n=5, n_sigma=2.5, dchi2_min=150))
    assert untrained_rules(served, card) == {}
    # The shipped card predates the record: trained on the defaults.
    assert untrained_rules(TriggerSettings(), {}) == {}
    assert "low_cadence" in untrained_rules(
        TriggerSettings(low_cadence=LowCadenceRuleSettings(k=8)), {}
    )


def test_stage_with_averaged_points_triggers_what_the_full_alertfinder_does() -> None:
    """With ``average > 1`` the stage reads ``n + average - 1`` points per dataset, so the
    rising test of the tails is the full rule's; a faint rise passes only averaged."""
    obs = light_curves(12, 300, set(), seed=2)
    epoch = np.round((obs.hjd - T0) / 0.2)
    faint = np.isin(obs.star_id, [0, 3, 6, 9])
    # A ramp to 3 errors over the last 40 epochs: its single points seldom pass 5 of 5.
    columns = {f: getattr(obs, f) for f in obs.__dataclass_fields__}
    columns["flux"] = obs.flux + np.where(faint, 0.75 * np.clip(epoch - 259, 0, None), 0.0)
    store = StarStore(StoreConfig())
    store.append("SSO", Observations.from_columns(**columns))
    averaged = TriggerSettings(
        high_cadence=RuleSettings(k=5, n=5, n_sigma=3.0, dchi2_min=50.0, average=6),
        low_cadence=LowCadenceRuleSettings(
            k=8, n=10, n_sigma=3.0, dchi2_min=50.0, average=3, baseline_part=2
        ),
    )
    stage = TriggerStage(averaged)
    full = store.to_trigger_arrays(np.arange(12))
    rules = stage.rule_for(full.dataset_field, full.star_offsets)
    assert {str(r) for r in rules} == {"5/5@3:50~6", "8/10@3:50~3^2"}
    reference = whole_buffer_rule(full, rules)
    outcome = stage.run(store, np.arange(12))
    assert set(outcome.rising.star_ids.tolist()) == set(
        np.arange(12)[reference.passed_rising].tolist()
    )
    triggered = set(outcome.rising.star_ids[outcome.rising.triggered].tolist())
    assert triggered == set(np.arange(12)[reference.triggered].tolist())
    assert {0, 6} <= triggered
    # The cache holds each rule's baseline: the oldest half's median for low-cadence stars.
    rows = store.stars.rows(np.arange(12))
    np.testing.assert_array_equal(
        store.stars.baseline[rows, 2, 0], reference.baseline.astype(np.float32)
    )
    stage.refresh(store, np.arange(12))
    np.testing.assert_array_equal(
        store.stars.baseline[rows, 2, 0], reference.baseline.astype(np.float32)
    )
    alone = TriggerStage(TriggerSettings()).rising(store, np.arange(12))
    assert {0, 6}.isdisjoint(alone.passers.tolist())
