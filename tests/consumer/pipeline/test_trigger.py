"""The daemon's trigger stage against the AlertFinder run on whole buffers."""

from __future__ import annotations

from typing import Any

import numpy as np

from consumer.alertfinder.api import dataset_medians, evaluate_batch
from consumer.edge.photometry import Observations
from consumer.pipeline.trigger import TriggerStage
from consumer.settings import TriggerSettings
from consumer.state.store import StarStore, StoreConfig

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
    reference = evaluate_batch(
        full.t,
        full.flux,
        full.flux_err,
        full.dataset_offsets,
        full.star_offsets,
        k=[r.k for r in rules],
        n=[r.n for r in rules],
        n_sigma=3.0,
        dchi2_min=[r.dchi2_min for r in rules],
    )
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
